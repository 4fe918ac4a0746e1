"""`megabyte plot RUN...`: the x values (steps, bytes, FLOPs, wall seconds), the figure of several
runs, and the errors."""

import json

import numpy as np
import pytest

from model.flops import training_flops_per_byte
from tools.cli import main as cli

from helpers import error_line
from train.plots import plot_runs, run_series, unique_labels
from train.config import load_config

T0 = 1_800_000_000.0  # the records' absolute times start here

# (kind, step, seconds after T0, bits per byte, bytes seen): a run logging every 10 steps,
# evaluated at 20 and at 35 (between two logged steps), stopped after step 40, resumed an hour later
# (the records after step 40 are gone: the resume redid them), and stopped again at 55, past the
# last logged step (50)
RECORDS = [("train", 10, 0.0, 7.0, 1000), ("train", 20, 5.0, 6.0, 2000), ("eval", 20, 7.0, 6.5, None),
           ("train", 30, 10.0, 5.0, 3100), ("eval", 35, 12.5, 5.5, None), ("train", 40, 15.0, 4.5, 4100),
           ("train", 50, 3620.0, 4.0, 5000), ("eval", 55, 3623.0, 3.9, None)]


def write_run(folder, records=RECORDS):
    """A run directory as the trainer leaves it: its resolved config (from `megabyte config`) and
    metrics.jsonl, without checkpoints."""
    folder.mkdir(parents=True)
    for kind, step, seconds, bpb, bytes_seen in records:
        record = {"step": step, "kind": kind, "time": T0 + seconds, "bpb": bpb}
        if kind == "train":
            record.update(lr=1e-3 * step, bytes_seen=bytes_seen)
        with open(folder / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
    return folder


@pytest.fixture
def runs(tmp_path, capsys):
    folders = []
    for name, preset in [("a", "tiny"), ("b", "tiny-transformer")]:
        folder = write_run(tmp_path / name / "run")
        capsys.readouterr()
        assert cli(["config", "--config", "tiny-cpu", "--set", f"model.preset={preset}"]) == 0
        (folder / "config.json").write_text(capsys.readouterr().out)
        folders.append(folder)
    return folders


def test_steps_and_bytes(runs):
    steps = run_series(runs[0], "steps")
    assert steps.train_x.tolist() == [10, 20, 30, 40, 50] and steps.eval_x.tolist() == [20, 35, 55]
    assert steps.eval_bpb.tolist() == [6.5, 5.5, 3.9] and steps.lr.tolist() == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    series = run_series(runs[0], "bytes")
    assert series.train_x.tolist() == [1000, 2000, 3100, 4100, 5000]
    # step 20 is logged; 35 is halfway from 30 to 40; 55 is past the last logged step: 100 bytes a step
    assert series.eval_x.tolist() == [2000, (3100 + 4100) / 2, 5500]
    assert series.train_bpb.tolist() == [7.0, 6.0, 5.0, 4.5, 4.0]


def test_flops_are_bytes_times_the_runs_own_models_flops_per_byte(runs):
    for run, preset in zip(runs, ["tiny", "tiny-transformer"]):
        per_byte = training_flops_per_byte(load_config("tiny-cpu", [f"model.preset={preset}"]).model)
        flops, by_bytes = run_series(run, "flops"), run_series(run, "bytes")
        np.testing.assert_allclose(flops.train_x, by_bytes.train_x * per_byte)
        np.testing.assert_allclose(flops.eval_x, by_bytes.eval_x * per_byte)
    per_byte = [run_series(run, "flops").train_x[0] / 1000 for run in runs]
    assert per_byte[0] != per_byte[1]  # two models, two costs


def test_wall_seconds_leave_out_the_pause_before_a_resume(runs):
    series = run_series(runs[0], "wall")
    # the hour between step 40 and 50 (3605 s) is a pause: those two records are 0 s apart
    assert series.train_x.tolist() == [0, 5, 10, 15, 15]
    assert series.eval_x.tolist() == [7, 12.5, 18]


def test_a_quick_restart_counts_as_wall_time(tmp_path):
    records = [("train", 10, 0.0, 7.0, 1000), ("train", 20, 5.0, 6.0, 2000), ("train", 30, 95.0, 5.0, 3000)]
    run = write_run(tmp_path / "run", records)
    assert run_series(run, "wall").train_x.tolist() == [0, 5, 95]  # 90 s: less than the pause threshold


def test_several_runs_one_figure_and_a_single_run_by_default(runs, tmp_path, capsys):
    out = tmp_path / "both.png"
    assert cli(["plot", *map(str, runs), "--x", "flops", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and capsys.readouterr().out == f"{out}: written\n"
    assert plot_runs(runs, tmp_path / "lib.png", x="wall", labels=["one", "two"]) == tmp_path / "lib.png"
    assert (tmp_path / "lib.png").read_bytes()[:4] == b"\x89PNG"
    assert cli(["plot", str(runs[0])]) == 0
    assert (runs[0] / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert unique_labels(["run", "run", "other", "run"]) == ["run", "run (2)", "other", "run (3)"]



def test_errors_are_one_line(runs, tmp_path, capsys):
    assert cli(["plot", *map(str, runs)]) == 2
    assert "--out is needed with 2 runs" in error_line(capsys)
    bare = write_run(tmp_path / "bare")  # metrics but no config.json
    assert cli(["plot", str(bare), "--x", "flops", "--out", str(tmp_path / "f.png")]) == 2
    assert f"{bare}: no config.json" in error_line(capsys)
    assert cli(["plot", str(runs[0]), str(tmp_path / "nothing"), "--out", str(tmp_path / "n.png")]) == 2
    assert "nothing: not a run directory" in error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert cli(["plot", str(runs[0]), str(tmp_path / "empty"), "--out", str(tmp_path / "e.png")]) == 2
    assert "empty: no training metrics" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == []
