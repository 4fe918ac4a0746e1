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
from compare.sweep import grid_trials
from pipeline.format.errors import UsageError
from helpers import ENV, REPO, make_dataset, relabelled, write_config
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
                runs: dict | None = None, seeds: int = 1, sweep: dict | None = None) -> Path:
    """runs: name → (preset, its set), or (preset, its set, its own sweep); sweep: the suite's."""
    runs = runs or {"megabyte": ("tiny", SMALL), "deep": ("tiny", DEEP)}
    lines = ['title = "test"', f'train = "{data["train"]}"', f'validation = "{data["validation"]}"',
             f'out_dir = "{out_dir}"', f'config = "{data["config"]}"', budget, "generate_bytes = 32",
             "generate_repeats = 2", "curve_points = 3", "curve_batches = 1", f"seeds = {seeds}", "[set]",
             '"model.seq_len" = 64', '"model.dropout" = 0.0', '"optim.warmup_steps" = 5',
             "[sweep]", *(f'"{key}" = {json.dumps(values)}' for key, values in (sweep or {}).items())]
    for name, (preset, overrides, *own) in runs.items():
        lines += ["[[runs]]", f'name = "{name}"', f'preset = "{preset}"', f"set = {inline_table(overrides)}"]
        lines += [f"sweep = {inline_table(own[0])}"] if own else []
    path.write_text("\n".join(lines) + "\n")
    return path


def inline_table(values: dict) -> str:
    return "{ " + ", ".join(f'"{key}" = {json.dumps(value)}' for key, value in values.items()) + " }"


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


def interrupt(suite: Path, run_dir: Path, after_step: int, sig: signal.Signals, group: bool,
              name: str = "") -> int:
    """Start the comparison, send it `sig` once `run_dir` has a checkpoint past `after_step` (to its
    whole process group, as Ctrl-C or a scheduler does, or to it alone); check its last line: an
    interruption of the run `name` (default: the folder's), not an error. Returns the step of that
    checkpoint."""
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
        rf"megabyte compare: run '{name or run_dir.name}' interrupted \({sig.name}\) at step (\d+) of (\d+): "
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
    ({"images": True, "runs": {"spacebyte": ("tiny-spacebyte", {})}},
     'holds image; [model]: MegaByteConfig: spacebyte\'s spacelike patches follow words, and image bytes have '
     'none: set patching="periodic"'),
])
def test_a_bad_suite_is_one_line_and_trains_nothing(data, tmp_path, capsys, change, message):
    if change.get("missing"):
        data = {**data, "train": tmp_path / "no-such-dataset"}
    if change.get("images"):
        data = {**data, "train": relabelled(data["train"], tmp_path / "images", "image")}
    kwargs = {k: v for k, v in change.items() if k not in ("missing", "images")}
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
        for trial in [t for run in suite.runs for t in grid_trials(suite, run)]:
            config = suite.train_config(trial, total_steps=1)  # keys, types and presets: no data needed
            plan = plan_run(suite, trial, config, suite.fingerprint(config))  # at least MIN_STEPS
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
    monkeypatch.setattr(compare.runner, "score_trial",
                        lambda *args: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5))
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out")
    assert cli(["compare", str(suite)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == ("megabyte compare: interrupted (SIGTERM) while measuring run 'megabyte': rerun the "
                   "same command to continue"), err
    assert not list((tmp_path / "out").rglob("result*.json")) + list((tmp_path / "out").rglob("scores.json"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the comparison's handler is gone


# ---- sweeps and seeds ----

LRS = [3e-4, 3e-3]


@pytest.fixture(scope="module")
def swept(data, tmp_path_factory):
    """A comparison of two runs: one sweeps the suite's learning rates, the other its own grid of two
    keys; the best setting of each is trained again with a second seed."""
    root = tmp_path_factory.mktemp("compare-swept")
    runs = {"megabyte": ("tiny", SMALL),
            "deep": ("tiny", DEEP, {"optim.lr": [1e-3], "optim.weight_decay": [0.0, 0.1]})}
    suite = write_suite(root / "suite.toml", data, root / "out", runs=runs, seeds=2, sweep={"optim.lr": LRS})
    result = subprocess.run(compare_command(suite), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"suite": suite, "out": root / "out", "stdout": result.stdout}


def grid_scores(out: Path, run: str) -> dict[str, dict]:
    """Each trial's scores.json under OUT/runs/RUN, by its folder's name."""
    return {path.parent.name: json.loads(path.read_text()) for path in (out / "runs" / run).glob("*/scores.json")}


@pytest.mark.slow
def test_a_sweeps_best_is_the_least_bpb_of_its_grid_and_its_seeds_are_averaged(swept):
    results = json.loads((swept["out"] / "results.json").read_text())
    megabyte, deep = results["runs"]
    scores = grid_scores(swept["out"], "megabyte")
    seed = scores["optim.lr=0.0003"]["seed"]  # the config's run.seed: the grid's
    assert sorted(scores) == ["optim.lr=0.0003", "optim.lr=0.003",
                              f"optim.lr={megabyte['setting']['optim.lr']},seed={seed + 1}"]
    grid = {json.dumps(entry["set"]): entry for entry in megabyte["sweep"]}
    assert [entry["set"] for entry in megabyte["sweep"]] == [{"optim.lr": lr} for lr in LRS]
    best = min(megabyte["sweep"], key=lambda entry: entry["bpb"])
    assert best["best"] and sum(entry["best"] for entry in megabyte["sweep"]) == 1
    assert megabyte["setting"] == best["set"]
    for entry in megabyte["sweep"]:  # every setting's figure is its trial's own evaluation
        assert entry["bpb"] == scores[f"optim.lr={entry['set']['optim.lr']}"]["bpb"]
    # the best setting again at the next seed: the run's bpb is the mean of the two
    seeds = {s["seed"]: s["bpb"] for s in megabyte["seeds"]}
    assert sorted(seeds) == [seed, seed + 1] and seeds[seed] == best["bpb"] != seeds[seed + 1]
    assert megabyte["bpb"] == pytest.approx(sum(seeds.values()) / 2)
    assert (megabyte["bpb_min"], megabyte["bpb_max"]) == (min(seeds.values()), max(seeds.values()))
    # a run's own sweep: every combination of its keys, [sweep] not applied
    assert [entry["set"] for entry in deep["sweep"]] == [{"optim.lr": 1e-3, "optim.weight_decay": 0.0},
                                                           {"optim.lr": 1e-3, "optim.weight_decay": 0.1}]
    assert deep["edge"] == ["optim.weight_decay"] and megabyte["edge"] == ["optim.lr"]  # two values: both edges
    assert len(grid) == 2 and results["seeds"] == 2
    table = (swept["out"] / "results.md").read_text()
    assert "best at the edge of its grid (optim.lr)" in table and "Every setting tried" in table
    assert "Ordering by mean bits per byte over 2 seeds" in table and "unigram entropy" in table
    assert "megabyte: " in swept["stdout"] and "(mean of 2 seeds" in swept["stdout"]


@pytest.mark.slow
def test_an_interrupted_sweep_reruns_to_identical_results(swept, data, tmp_path):
    runs = {"megabyte": ("tiny", SMALL),
            "deep": ("tiny", DEEP, {"optim.lr": [1e-3], "optim.weight_decay": [0.0, 0.1]})}
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", runs=runs, seeds=2,
                        sweep={"optim.lr": LRS})
    second = tmp_path / "out" / "runs" / "megabyte" / "optim.lr=0.003"
    interrupt(suite, second, 0, signal.SIGTERM, group=True, name="megabyte/optim.lr=0.003")  # the 2nd setting
    again = subprocess.run(compare_command(suite), cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "megabyte/optim.lr=0.0003: done before, skipped" in again.stdout
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    reference = json.loads((swept["out"] / "results.json").read_text())["runs"]
    fixed = FIXED[:-1] + ("setting", "bpb_min", "bpb_max", "seeds")
    assert [{k: run[k] for k in fixed} for run in resumed] == [{k: run[k] for k in fixed} for run in reference]
    assert [[{k: e[k] for k in ("set", "bpb", "best")} for e in run["sweep"]] for run in resumed] == \
        [[{k: e[k] for k in ("set", "bpb", "best")} for e in run["sweep"]] for run in reference]


@pytest.mark.slow
def test_a_widened_grid_trains_only_its_new_settings(data, tmp_path):
    runs = {"megabyte": ("tiny", SMALL)}
    for grid in (LRS, [*LRS, 1e-2]):
        suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", runs=runs, sweep={"optim.lr": grid})
        done = subprocess.run(compare_command(suite), cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "megabyte/optim.lr=0.0003: done before, skipped" in done.stdout
    assert re.search(r"^megabyte/optim\.lr=0\.01: \d+ steps", done.stdout, re.M)  # trained: it is new
    megabyte = json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]
    assert [entry["set"]["optim.lr"] for entry in megabyte["sweep"]] == [*LRS, 1e-2]
    assert megabyte["setting"] == min(megabyte["sweep"], key=lambda entry: entry["bpb"])["set"]


@pytest.mark.parametrize("sweep, message", [
    ({"optim.lr": 1e-3}, "optim.lr = 0.001: expected a list of the values to try"),
    ({"optim.lr": []}, "optim.lr = []: expected a list of the values to try"),
    ({"optim.lr": [1e-3, 1e-3]}, "a value is repeated"),
    ({"optim.lr": [1e-3, -1.0]}, "run 'megabyte/optim.lr=-1.0': optim.lr = -1.0: must be above 0"),
    ({"optim.lr": ["fast"]}, "run 'megabyte/optim.lr=fast': optim.lr = 'fast': expected float, not str"),
    ({"data.image_order": ["a/b"]}, "a swept value is a number, a boolean or a name"),
    ({"run.seed": [1, 2]}, "run.seed is not swept: set seeds = N"),
    ({"optim.total_steps": [10]}, "optim.total_steps is set by the comparison itself"),
    ({"optim.learning_rate": [1e-3]}, "unknown key"),
    ({"lr": [1e-3]}, "'lr' is not a train config key"),
])
def test_a_bad_sweep_is_one_line_and_trains_nothing(data, tmp_path, capsys, sweep, message):
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", sweep=sweep)
    assert cli(["compare", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("megabyte compare: error: ")
    assert message in err, err
    assert not (tmp_path / "out" / "runs").exists()


def test_the_plan_counts_every_setting_and_the_seeds(data, tmp_path, capsys):
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", seeds=3, sweep={"optim.lr": LRS},
                        runs={"megabyte": ("tiny", SMALL)})
    assert cli(["compare", str(suite), "--plan"]) == 0
    out = capsys.readouterr().out
    steps = [int(n.replace(",", "")) for n in re.findall(r"^megabyte/optim\.lr=\S+: ([\d,]+) steps", out, re.M)]
    assert len(steps) == 2
    total = float(re.search(r"in all: (\S+) training FLOPs", out).group(1))
    assert total == pytest.approx(4 * 1.5e10, rel=0.02)  # two settings, then two more seeds of the best
    assert "with 2 more seed(s)" in out and re.search(r"about \d+ minutes of training", out)
    assert not (tmp_path / "out").exists()


def test_an_ordering_is_called_only_where_the_gap_exceeds_the_spread():
    from compare.report import ordering

    runs = [{"name": "a", "bpb": 2.0, "bpb_min": 1.9, "bpb_max": 2.1},
            {"name": "b", "bpb": 2.15, "bpb_min": 2.05, "bpb_max": 2.25},  # overlaps a
            {"name": "c", "bpb": 3.0, "bpb_min": 2.9, "bpb_max": 3.1}]
    assert "b ≈ a" not in ordering(runs, 2) and "a ≈ b < c ('<'" in ordering(runs, 2)
    assert "one seed: no spread measured" in ordering(runs, 1)


def test_the_largest_rise_of_the_training_loss_is_measured_from_the_lowest_point_before():
    from compare.measure import loss_rise

    records = [{"step": s, "bpb": b} for s, b in [(5, 6.0), (10, 4.0), (15, 5.5), (20, 3.0), (25, 3.2)]]
    assert loss_rise(records) == {"loss_rise": 1.5, "loss_rise_step": 15}
    assert loss_rise(records[:2]) == {"loss_rise": 0.0, "loss_rise_step": 5}


def test_results_flag_a_best_at_the_edge_and_a_generation_timed_on_a_busy_machine():
    from compare.report import results_markdown

    header = {"title": "t", "date": "d", "machine": "m", "command": "c", "budget": "b", "train": "tr",
              "validation": "va", "generate_bytes": 8, "seeds": 1, "cores": 2, "scale": {"xz -9": 2.0}}
    run = {"name": "a", "preset": "tiny", "setting": {"optim.lr": 1e-3}, "bpb": 3.0, "bpb_min": 3.0,
           "bpb_max": 3.0, "seeds": [{"seed": 1, "bpb": 3.0}], "generate_bytes_per_s": 100.0}
    quiet = results_markdown(header, [{**run, "edge": [], "generate_load": 1.5}])
    busy = results_markdown(header, [{**run, "edge": ["optim.lr"], "generate_load": 3.5}])
    assert "edge" not in quiet and "exceeded" not in quiet and "| a | tiny | lr 0.001 |" in quiet
    assert "a: best at the edge of its grid (optim.lr): widen the grid." in busy
    assert "a: generation timed while the machine's load (3.5) exceeded its 2 cores" in busy
    assert "xz -9 2.000" in busy


def test_results_note_a_spacebyte_runs_patch_length_and_untrained_share_and_nothing_for_others():
    from compare.report import results_markdown

    header = {"title": "t", "date": "d", "machine": "m", "command": "c", "budget": "b", "train": "tr",
              "validation": "va", "generate_bytes": 8, "seeds": 1, "cores": 2, "scale": {"xz -9": 2.0}}
    run = {"name": "a", "preset": "tiny", "setting": {}, "bpb": 3.0, "bpb_min": 3.0, "bpb_max": 3.0,
           "seeds": [{"seed": 1, "bpb": 3.0}]}
    spacebyte = {**run, "name": "s", "preset": "tiny-spacebyte", "mean_patch_bytes": 5.4321,
                 "untrained_fraction": 0.0123}
    assert "patches of" not in results_markdown(header, [run])
    text = results_markdown(header, [run, spacebyte])
    assert "- s: patches of 5.43 bytes on average on the validation bytes; 1.2% of them past its global" in text
    assert "- a: patches" not in text


@pytest.mark.slow
def test_a_spacebyte_run_is_scored_with_its_patch_length_and_untrained_share(data, tmp_path):
    """global_len = 4 on 64-byte windows of code-like text: many bytes past the global positions."""
    suite = write_suite(tmp_path / "suite.toml", data, tmp_path / "out", budget="budget_flops = 3.5e9",
                        runs={"spacebyte": ("tiny-spacebyte", {**SMALL, "model.global_len": 4})})
    assert cli(["compare", str(suite)]) == 0
    [run] = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert run["architecture"] == "spacebyte" and 2 < run["mean_patch_bytes"] < 8
    assert 0.2 < run["untrained_fraction"] < 1
    assert "- spacebyte: patches of" in (tmp_path / "out" / "results.md").read_text()
