"""`megabyte compare`: budgets, resumable runs, results, and bad suites refused before training."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compare.plan import plan_run, plan_suite
from compare.runner import trained_steps
from compare.suite import SHIPPED_SUITES, build_suite, load_suite
from pipeline.format.errors import UsageError
from helpers import ENV, REPO, make_dataset, write_config
from tools.cli import main as cli

SMALL = {"model.global_dim": 64, "model.global_layers": 2, "model.global_heads": 2, "model.local_dim": 32,
         "model.local_layers": 1, "model.local_heads": 2}
# the same MegaByte with twice the global layers: about twice the training FLOPs per byte
DEEP = {**SMALL, "model.global_layers": 6}
# what must come out the same however often the comparison was interrupted
FIXED = ("name", "preset", "architecture", "parameters", "flops_per_byte", "steps", "bytes_trained",
         "flops_spent", "bpb", "bpb_strided")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-data")
    train, validation = make_dataset(root, "train", 60, seed=1), make_dataset(root, "val", 6, seed=2)
    config = write_config(root, train, validation, run={"log_every": 5, "trace_batches": False})
    return {"train": train, "validation": validation, "config": config}


def write_suite(path: Path, data: dict, out_dir: Path, budget: str = "budget_flops = 1.5e10",
                runs: dict | None = None) -> Path:
    runs = runs or {"megabyte": ("tiny", SMALL), "deep": ("tiny", DEEP)}
    lines = ['title = "test"', f'train = "{data["train"]}"', f'validation = "{data["validation"]}"',
             f'out_dir = "{out_dir}"', f'config = "{data["config"]}"', budget, "generate_bytes = 32",
             "curve_points = 3", "curve_batches = 1", "[set]", '"model.seq_len" = 64',
             '"model.dropout" = 0.0', '"optim.warmup_steps" = 5']
    for name, (preset, overrides) in runs.items():
        table = ", ".join(f'"{key}" = {json.dumps(value)}' for key, value in overrides.items())
        lines += ["[[runs]]", f'name = "{name}"', f'preset = "{preset}"', f"set = {{ {table} }}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def compare_command(suite: Path) -> list[str]:
    return [sys.executable, "-m", "tools.cli", "compare", str(suite)]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A whole comparison of two runs, run once: the reference for the tests below."""
    root = tmp_path_factory.mktemp("compare-finished")
    suite = write_suite(root / "suite.toml", data, root / "out")
    result = subprocess.run(compare_command(suite), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "out"


@pytest.mark.slow
def test_runs_that_cost_twice_as_much_per_byte_spend_the_same_flops(finished):
    results = json.loads((finished / "results.json").read_text())
    megabyte, deep = results["runs"]
    assert 1.7 < deep["flops_per_byte"] / megabyte["flops_per_byte"] < 2.3
    assert deep["flops_spent"] == pytest.approx(megabyte["flops_spent"], rel=0.01)
    assert megabyte["flops_spent"] == pytest.approx(1.5e10, rel=0.01)
    # FLOPs spent are the trained bytes at the model's price: the dearer model saw fewer bytes
    for run in (megabyte, deep):
        assert run["flops_spent"] == pytest.approx(run["bytes_trained"] * run["flops_per_byte"])
        steps = [r["step"] for r in map(json.loads, (finished / "runs" / run["name"] / "metrics.jsonl")
                                        .read_text().splitlines()) if r["kind"] == "train"]
        assert steps[-1] == run["steps"]
    assert deep["bytes_trained"] < 0.6 * megabyte["bytes_trained"]
    for run in (megabyte, deep):
        assert 0 < run["bpb"] < 8 and 0 < run["bpb_strided"] < 8 and run["generate_bytes_per_s"] > 0
    table = (finished / "results.md").read_text()
    assert "| megabyte | tiny |" in table and "| deep | tiny |" in table
    assert (finished / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_a_rerun_skips_finished_runs(finished, data, tmp_path, capsys):
    suite = write_suite(tmp_path / "suite.toml", data, finished)
    before = (finished / "results.json").read_text()
    assert cli(["compare", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "megabyte: done before, skipped" in out and "deep: done before, skipped" in out
    assert json.loads(before)["runs"] == json.loads((finished / "results.json").read_text())["runs"]


def interrupt(suite: Path, run_dir: Path, after_step: int, sig: signal.Signals, group: bool) -> int:
    """Start the comparison, send it `sig` once `run_dir` has a checkpoint past `after_step` (to its
    whole process group, as Ctrl-C or a scheduler does, or to it alone); check its last line: an
    interruption, not an error. Returns the step of that checkpoint."""
    process = subprocess.Popen(compare_command(suite), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while trained_steps(run_dir) <= after_step:
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    if group:
        os.killpg(process.pid, sig)  # the comparison and its trainer, at once
    else:
        process.send_signal(sig)  # the comparison alone: it passes the signal on to the trainer
    assert process.wait(timeout=120) == 130
    err = process.stderr.read()
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and re.fullmatch(
        rf"megabyte compare: run '{run_dir.name}' interrupted \({sig.name}\) at step (\d+) of (\d+): "
        "rerun the same command to continue", last), err
    return int(re.search(r"at step (\d+)", last).group(1))


@pytest.mark.slow
def test_an_interrupted_comparison_continues_to_the_same_results(finished, data, tmp_path):
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out")
    runs = tmp_path / "out" / "runs"
    interrupt(suite, runs / "megabyte", 0, signal.SIGUSR1, group=True)  # SLURM's pre-emption warning
    step = interrupt(suite, runs / "deep", 0, signal.SIGTERM, group=False)
    interrupt(suite, runs / "deep", step, signal.SIGTERM, group=True)
    assert not (tmp_path / "out" / "results.json").exists()

    again = subprocess.run(compare_command(suite), cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "megabyte: done before, skipped" in again.stdout
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    reference = json.loads((finished / "results.json").read_text())["runs"]
    assert [{k: run[k] for k in FIXED} for run in resumed] == [{k: run[k] for k in FIXED} for run in reference]
    assert len(json.loads((tmp_path / "out" / "runs" / "deep" / "compare-wall.json").read_text())) == 3


@pytest.mark.parametrize("change, message", [
    ({"runs": {"megabyte": ("tiny-nonexistent", {})}}, "model.preset 'tiny-nonexistent' is not a preset"),
    ({"budget": "budget_flops = 0"}, "budget_flops = 0: the budget must be above 0"),
    ({"budget": "budget_minutes = -1"}, "budget_minutes = -1: the budget must be above 0"),
    ({"budget": "budget_flops = 1e3"}, "buys 0 steps"),
    ({"missing": True}, "not a converted dataset (no index.json)"),
])
def test_a_bad_suite_is_one_line_and_trains_nothing(data, tmp_path, capsys, change, message):
    if change.get("missing"):
        data = {**data, "train": tmp_path / "no-such-dataset"}
    kwargs = {k: v for k, v in change.items() if k != "missing"}
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", **kwargs)
    assert cli(["compare", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("megabyte compare: error: ")
    assert message in err
    assert not (tmp_path / "out" / "runs").exists()


def test_suite_keys_are_checked(tmp_path):
    base = {"train": "t", "validation": "v", "out_dir": "o", "budget_flops": 1e12,
            "runs": [{"name": "a", "preset": "tiny"}]}
    bad = [({"budget_minutes": 3}, "both budget_flops and budget_minutes"),
           ({"budget_flops": None}, "no budget"),
           ({"runs": []}, "no runs"),
           ({"runs": [{"name": "a", "preset": "tiny"}] * 2}, "run name 'a' is used twice"),
           ({"runs": [{"name": "a/b", "preset": "tiny"}]}, "letters, digits"),
           ({"runs": [{"name": "a", "preset": "tiny", "seed": 1}]}, "unknown key(s) ['seed']"),
           ({"set": {"optim.total_steps": 5}}, "optim.total_steps is set by the comparison"),
           ({"set": {"seq_len": 5}}, "not a train config key"),
           ({"epochs": 5}, "unknown key(s) ['epochs']"),
           ({"train": 5}, "train = 5: expected str, not int"),
           ({"launcher": ["deepspeed", 8]}, "a list of words")]
    for change, message in bad:
        raw = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(UsageError, match=None) as error:
            build_suite(tmp_path / "s.toml", raw)
        assert message in str(error.value), (change, str(error.value))
    nested = build_suite(tmp_path / "s.toml", {**base, "set": {"model": {"seq_len": 256}}})
    assert nested.overrides == {"model.seq_len": 256}


@pytest.mark.slow
def test_a_changed_run_is_not_continued_under_another_plan(finished, data, tmp_path, capsys):
    suite = write_suite(tmp_path / "suite.toml", data, finished, runs={"megabyte": ("tiny", DEEP)})
    assert cli(["compare", str(suite), "--plan"]) == 2
    assert "run 'megabyte' was planned from other settings" in capsys.readouterr().err


def test_every_shipped_suite_plans_each_run():
    names = sorted(p.stem for p in SHIPPED_SUITES.glob("*.toml"))
    assert {"text-prose", "text-code", "images32", "audio", "patch-size", "global-local"} <= set(names)
    for name in names:
        suite = load_suite(name)
        assert suite.budget_flops > 0, name  # reproducible: the same steps on every machine
        for run in suite.runs:
            config = suite.train_config(run, total_steps=1)  # keys, types and presets: no data needed
            plan = plan_run(suite, run, config, suite.fingerprint(config))  # at least MIN_STEPS
            assert plan.steps * plan.flops_per_step == pytest.approx(suite.budget_flops, rel=0.01)


def test_a_wall_clock_budget_is_planned_from_timed_steps(data, tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "suite.toml", data, tmp_path / "out",
                                       budget="budget_minutes = 0.5")))
    plan_suite(suite)  # as a real run plans: saved in OUT/plan.json
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    for name in ("megabyte", "deep"):
        seconds = plan[name]["seconds_per_step"]
        assert seconds > 0 and plan[name]["steps"] == max(1, int(30 / seconds))
    assert not (tmp_path / "out" / "runs").exists()
    # planned once: a second look reuses the timing rather than measuring again
    plan_suite(suite)
    assert json.loads((tmp_path / "out" / "plan.json").read_text()) == plan


def test_a_signal_while_a_run_is_measured_stops_in_one_line_and_writes_no_result(data, tmp_path, capsys,
                                                                                   monkeypatch):
    """Outside a run's training, a SIGTERM stops the comparison as one at training time does:
    exit 130, one line naming what it was doing, and no result half-written (the rerun redoes it)."""
    import compare.runner

    monkeypatch.setattr(compare.runner, "train", lambda suite, run, plan: None)  # trained before
    monkeypatch.setattr(compare.runner, "measure_run",
                        lambda *args: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out")
    assert cli(["compare", str(suite)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == ("megabyte compare: interrupted (SIGTERM) while measuring run 'megabyte': rerun the "
                   "same command to continue"), err
    assert not list((tmp_path / "out").rglob("result*.json"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the comparison's handler is gone
