"""The trainer stopped and resumed the unlucky way: a SIGTERM to the whole process group (as SLURM,
Kubernetes and docker stop a job), with real processes; a save killed half-way; a corrupt newest
checkpoint; a checkpoint whose pickles would run code; a full disk; a checkpoint far from its
data."""

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from model import build_model
from model.weights import load_weights
from pipeline.format.errors import UsageError
from tools.cli import main as cli
from train import checkpoint
from train.config import load_config
from train.loop import pace, reachable_steps
from train.state import RunState

from helpers import TINY_MODEL, error_line, losses, run_training, start_training, wait_for_steps, write_config


@pytest.mark.slow
def test_group_sigterm_with_workers_saves_exits_0_and_resumes(tmp_path, data):
    config = write_config(tmp_path, data["text"], data={"num_workers": 2},
                          optim={"total_steps": 100000}, run={"checkpoint_every": 0})
    run_dir = tmp_path / "run"
    saved = 0
    for attempt in range(3):
        process = start_training(config)
        wait_for_steps(process, run_dir, saved + 2)
        os.killpg(process.pid, signal.SIGTERM)  # the trainer and its loader workers, all at once
        stderr = process.communicate(timeout=120)[1]
        assert process.returncode == 0, f"attempt {attempt}: {stderr[-2000:]}"
        if saved:
            assert f"(step {saved})" in stderr, stderr[-2000:]  # resumed from the last save
        steps = len(losses(run_dir))  # metrics of redone steps are dropped on resume
        assert steps >= saved + 2
        latest = (run_dir / "checkpoints" / "latest").read_text().strip()
        assert latest == f"step-{steps:06d}"
        assert (run_dir / "checkpoints" / latest / "COMPLETE").is_file()
        saved = steps
        try:  # no worker outlived the run
            os.killpg(process.pid, 0)
            raise AssertionError(f"attempt {attempt}: processes of the group are still alive")
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_group_sigterm_during_validation_saves_and_exits_0(tmp_path, data):
    """Validation runs after every step here, so most of the run is spent in it: its loader's
    workers leave the group's SIGTERM to the trainer too."""
    config = write_config(tmp_path, data["text"], validation=data["text"], data={"num_workers": 2},
                          optim={"total_steps": 100000}, run={"checkpoint_every": 0, "eval_every": 1})
    process = start_training(config)
    wait_for_steps(process, tmp_path / "run", 2)
    os.killpg(process.pid, signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 0, stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def freeze_during_a_save(process, root: Path) -> Path:
    """Stop the run's process group (SIGSTOP) while a checkpoint after step 1 is half written:
    files in it, no COMPLETE yet; returns that folder."""
    deadline = time.time() + 240
    while True:
        assert process.poll() is None and time.time() < deadline, process.stderr[-2000:]
        partial = [folder for folder in root.glob("step-*") if not (folder / checkpoint.MARKER).exists()]
        if partial and partial[0].name > "step-000001":
            os.killpg(process.pid, signal.SIGSTOP)
            folder = partial[0]
            if folder.is_dir() and not (folder / checkpoint.MARKER).exists() and any(folder.rglob("*.*")):
                return folder
            os.killpg(process.pid, signal.SIGCONT)  # the save ended in between: catch the next one
        time.sleep(0.001)


@pytest.mark.slow
def test_a_save_killed_half_way_is_never_taken_for_a_complete_one(tmp_path, data):
    config = write_config(tmp_path, data["text"], optim={"total_steps": 100000}, run={"checkpoint_every": 1})
    root = tmp_path / "run" / "checkpoints"
    process = start_training(config)
    half = freeze_during_a_save(process, root)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    step = int(half.name.removeprefix("step-"))
    previous = root / f"step-{step - 1:06d}"
    assert checkpoint.latest(root) == previous and checkpoint.newest_intact(root, move_aside=False) == previous
    result = run_training(config, extra=[f"optim.total_steps={step}"])  # redoes that one step
    assert f"resuming from {previous} (step {step - 1})" in result.stderr
    assert checkpoint.latest(root) == half and checkpoint.damage(half) is None  # saved whole this time


# ---------------------------------------------------------------------------------------------
# a corrupt newest checkpoint: verified against its COMPLETE record, the newest intact one is used


class Files:
    """A part that writes its own files, as DeepSpeed's engine does (a model and an optimizer)."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"module": torch.arange(2560.0)}, folder / "model_states.pt")
        torch.save({"optimizer": torch.ones(100)}, folder / "optim_states.pt")

    def load(self, folder: Path) -> None:
        pass


def save_two(root: Path) -> None:
    for step in (2, 4):
        checkpoint.save(root, step, {"engine": Files(), "run": RunState(step=step)}, {}, keep_last=3)


def truncate_model(folder: Path) -> None:
    path = folder / "model_states.pt"
    path.write_bytes(path.read_bytes()[:100])


def garbage_state(folder: Path) -> None:
    path = folder / "state" / "rank-00000.json"
    path.write_bytes(path.read_bytes()[:-9] + b"garbage!\n")


def missing_optimizer(folder: Path) -> None:
    (folder / "optim_states.pt").unlink()


@pytest.mark.parametrize("corrupt, said", [(truncate_model, "model_states.pt is 100 bytes"),
                                           (garbage_state, "rank-00000.json changed"),
                                           (missing_optimizer, "optim_states.pt is missing")])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_intact_one(tmp_path, world_of_one, capsys,
                                                                  corrupt, said):
    root = tmp_path / "checkpoints"
    save_two(root)
    assert checkpoint.damage(root / "step-000004") is None
    corrupt(root / "step-000004")
    assert said in checkpoint.damage(root / "step-000004")
    assert checkpoint.newest_intact(root, move_aside=False) == root / "step-000002"
    assert (root / "step-000004").is_dir()  # a reader (export) moves nothing
    assert checkpoint.newest_intact(root) == root / "step-000002"
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert said in line and "moved aside to broken-step-000004; using step-000002" in line
    assert (root / "broken-step-000004").is_dir() and checkpoint.complete_checkpoints(root) == [
        root / "step-000002"]


def test_no_intact_checkpoint_is_one_error_not_a_fresh_start(tmp_path, world_of_one):
    root = tmp_path / "checkpoints"
    save_two(root)
    truncate_model(root / "step-000004")
    missing_optimizer(root / "step-000002")
    with pytest.raises(UsageError, match="no intact checkpoint .*move the checkpoints folder aside"):
        checkpoint.newest_intact(root)
    assert (root / "step-000004").is_dir() and (root / "step-000002").is_dir()  # nothing moved


@pytest.mark.slow
def test_training_resumes_from_the_newest_intact_checkpoint(tmp_path, data):
    config = write_config(tmp_path, data["text"], optim={"total_steps": 4})
    run_dir = tmp_path / "run"
    run_training(config)
    newest = run_dir / "checkpoints" / "step-000004"
    [model] = newest.glob("*model_states.pt")
    model.write_bytes(model.read_bytes()[:1000])
    result = run_training(config)
    assert "step-000004 is broken" in result.stderr and "resuming from" in result.stderr
    assert "(step 2)" in result.stderr and (run_dir / "checkpoints" / "broken-step-000004").is_dir()
    assert checkpoint.damage(newest) is None  # saved again by the rerun
    assert json.loads((newest / checkpoint.CONFIG).read_text())["media"]["modality"] == "text"
    # none intact: one line, exit 2
    for folder in (run_dir / "checkpoints").glob("step-*"):
        next(folder.glob("*model_states.pt")).unlink()
    failed = start_training(config)
    assert failed.wait(timeout=300) == 2 and "no intact checkpoint" in failed.stderr
    assert "Traceback" not in failed.stderr


# ---------------------------------------------------------------------------------------------
# a checkpoint folder from elsewhere: DeepSpeed's pickles are read as plain data only


class RunsCode:
    """Unpickling this creates `marker`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def handmade_checkpoint(tmp_path: Path, module_states) -> Path:
    """A ZeRO-0 checkpoint folder as training writes it, with `module_states` as DeepSpeed's
    model file."""
    folder = tmp_path / "checkpoints" / "step-000001"
    config = load_config("tiny-cpu", [*TINY_MODEL, "deepspeed.zero_stage=0"])
    config.data.datasets = [str(tmp_path / "elsewhere")]
    folder.mkdir(parents=True)
    torch.save(module_states, folder / "mp_rank_00_model_states.pt")
    checkpoint.write_state(folder, 0, 1, {"run": RunState(step=1).state_dict()})
    (folder / checkpoint.CONFIG).write_text(json.dumps(config.to_dict()))
    checkpoint.write_marker(folder)
    return folder


@pytest.mark.parametrize("command", [["generate", "--model", "{ckpt}", "--bytes", "4", "--out", "{out}"],
                                     ["eval", "{ckpt}", "--data", "{data}"],
                                     ["export", "{ckpt}", "--out", "{out}"]])
def test_a_crafted_pickle_does_not_run_without_trust_checkpoint(tmp_path, capsys, data, command):
    marker = tmp_path / "code-ran"
    model = build_model(load_config("tiny-cpu", TINY_MODEL).model)
    folder = handmade_checkpoint(tmp_path, {"module": model.state_dict(), "hostile": RunsCode(marker)})
    argv = [a.format(ckpt=folder, out=tmp_path / "out.safetensors", data=data["text"]) for a in command]
    assert cli(argv) == 2
    error = capsys.readouterr().err
    assert "--trust-checkpoint" in error and len(error.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    cli([*argv[:1], "--trust-checkpoint", *argv[1:]])  # trusted, it is unpickled
    assert marker.exists()


def test_a_plain_checkpoint_loads_without_trust_and_with_it(tmp_path, capsys):
    config = load_config("tiny-cpu", TINY_MODEL)
    model = build_model(config.model)
    folder = handmade_checkpoint(tmp_path, {"module": model.state_dict(), "ds_version": "0"})
    for trust in ([], ["--trust-checkpoint"]):
        out = tmp_path / f"model{len(trust)}.safetensors"
        assert cli(["export", str(folder), "--out", str(out), *trust]) == 0
        exported, _ = load_weights(out)
        assert all(torch.equal(exported.state_dict()[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# a full disk and a bad --out: one line, the previous state intact, nothing half-written


class DiskFull(Files):
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model_states.pt").write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class TorchOnAFullDisk:
    """A DeepSpeed engine whose torch.save meets a full disk: torch says so in a RuntimeError, in
    one of these words (as measured on a full tmpfs), never in an OSError."""

    def __init__(self, message: str):
        self.message = message

    def save_checkpoint(self, save_dir, tag, save_latest):
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mp_rank_00_model_states.pt").write_bytes(b"half a model")
        raise RuntimeError(self.message)


@pytest.mark.parametrize("engine, said", [
    (DiskFull(), "No space left"),
    (TorchOnAFullDisk("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), "unexpected pos"),
    (TorchOnAFullDisk("PytorchStreamWriter failed writing file data/0: file write failed"), "file write failed"),
    (TorchOnAFullDisk("basic_ios::clear: iostream error"), "iostream error"),
])
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, world_of_one, engine, said):
    from train.engine import EngineState

    root = tmp_path / "checkpoints"
    save_two(root)
    part = engine if isinstance(engine, DiskFull) else EngineState(engine)
    with pytest.raises(UsageError, match=f"step-000006: cannot save the checkpoint .*{said}.* "
                                         "the newest is still step-000004"):
        checkpoint.save(root, 6, {"engine": part, "run": RunState(step=6)}, {}, keep_last=3)
    assert not (root / "step-000006").exists() and checkpoint.newest_intact(root) == root / "step-000004"
    assert (root / "latest").read_text().strip() == "step-000004"


def test_export_out_errors_are_one_line_and_leave_no_tmp(tmp_path, capsys, monkeypatch):
    model = build_model(load_config("tiny-cpu", TINY_MODEL).model)
    folder = handmade_checkpoint(tmp_path, {"module": model.state_dict()})
    out = tmp_path / "exports"
    out.mkdir()
    assert cli(["export", str(folder), "--out", str(out)]) == 2
    assert "is a folder" in capsys.readouterr().err

    def full_disk(model, path, metadata):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("train.export.save_weights", full_disk)
    assert cli(["export", str(folder), "--out", str(out / "model.safetensors")]) == 2
    assert "No space left" in capsys.readouterr().err and list(out.iterdir()) == []
    monkeypatch.undo()

    def safetensors_on_a_full_disk(model, path, metadata):  # what it raises there: not an OSError
        Path(path).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("model.weights.save_model", safetensors_on_a_full_disk)
    target = out / "new" / "folders" / "model.safetensors"
    assert cli(["export", str(folder), "--out", str(target)]) == 2
    line = error_line(capsys)
    assert f"{target}: cannot write the export" in line and "No space left on device" in line, line
    assert list(out.iterdir()) == []  # not even the folders it made for the file
    monkeypatch.undo()
    truncate = folder / "mp_rank_00_model_states.pt"
    truncate.write_bytes(truncate.read_bytes()[:500])
    assert cli(["export", str(folder), "--out", str(out / "model.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "broken checkpoint" in error and len(error.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_a_checkpoint_carries_its_modality_wherever_it_goes(tmp_path, capsys):
    """An image model's checkpoint, its datasets gone: generate still writes a picture."""
    model = build_model(load_config("tiny-cpu", TINY_MODEL).model)
    folder = handmade_checkpoint(tmp_path, {"module": model.state_dict()})
    config = json.loads((folder / checkpoint.CONFIG).read_text())
    config["media"] = {"modality": "image", "data_arguments": json.dumps({"size": 4, "resize": "crop"})}
    (folder / checkpoint.CONFIG).write_text(json.dumps(config))
    checkpoint.write_marker(folder)
    out = tmp_path / "sample.png"
    assert cli(["generate", "--model", str(folder), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "4×4 image" in capsys.readouterr().out
    exported = tmp_path / "image.safetensors"
    assert cli(["export", str(folder), "--out", str(exported)]) == 0
    assert load_weights(exported)[1]["modality"] == "image"


def test_the_progress_bar_ends_where_max_minutes_stops_the_run():
    config = load_config("tiny-cpu", ["run.max_minutes=2", "optim.total_steps=1000"])
    minute_ago = time.perf_counter() - 60
    assert 19 <= reachable_steps(config, 10, 0, minute_ago) <= 20  # 10 steps a minute, a minute left
    assert reachable_steps(config, 10, 10, minute_ago) == 1000  # no pace yet
    config.run.max_minutes = 0
    assert reachable_steps(config, 10, 0, minute_ago) == 1000


def test_the_first_step_says_how_long_the_run_will_take():
    assert pace(1, 150.0, 1_228_800, 19) == "step 1: 2.5 min a step (8,192 bytes/s); 19 steps left, about 47.5 min"
    assert pace(5, 0.5, 8192, 795) == "step 5: 0.5 s a step (16,384 bytes/s); 795 steps left, about 6.6 min"
    assert pace(1, 3600.0, 1_228_800, 2) == "step 1: 60.0 min a step (341 bytes/s); 2 steps left, about 2.0 h"


def test_metrics_cut_short_by_a_kill_do_not_stop_a_resume(tmp_path):
    from train.metrics import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    records = [json.dumps({"step": step, "loss": 1.0}) for step in (1, 2, 3)]
    path.write_text("\n".join(records) + '\n{"step": 4, "lo', encoding="utf-8")  # killed mid-line
    truncate_jsonl(path, 2)
    assert path.read_text(encoding="utf-8").splitlines() == records[:2]


@pytest.mark.slow
def test_a_resume_that_cannot_continue_the_stream_names_the_setting(tmp_path, data):
    """Other datasets or weights would make another data order: one line naming what changed,
    exit 2, and the checkpoint left as it was."""
    config = write_config(tmp_path, data["text"], optim={"total_steps": 4}, run={"checkpoint_every": 2})
    run_training(config, extra=["optim.total_steps=2"])
    folder = tmp_path / "run" / "checkpoints" / "step-000002"
    before = sorted(p.name for p in folder.iterdir())
    for change, words in [(f'data.datasets=["{data["text"]}", "{data["val"]}"]', "saved with other datasets"),
                          ("run.seed=8", "saved with other seed")]:
        result = start_training(config, extra=[change])
        assert result.wait(timeout=300) == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == before
