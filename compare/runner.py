"""Run a suite: each trial trains in its own process, then is scored here; results at the end.

    for each run, in the suite's order:
        OUT/runs/NAME/result.json of the same grid and seeds exists  → done before: skipped
        else, for each trial of its grid, then its best setting's other seeds (compare/sweep.py):
              OUT/runs/TRIAL/scores.json exists → done before: skipped
              else  launcher -m train.main ...  → trains, or resumes from its newest checkpoint
                    newest checkpoint's step < the plan's steps → it was stopped: stop here too
                    score (compare/measure.py) → OUT/runs/TRIAL/scores.json
              the run's summary, its best trial's other figures → OUT/runs/NAME/result.json
    then OUT/results.json, OUT/results.md and OUT/curves.png from every run's result

A SIGINT, SIGTERM or SIGUSR1 while a run trains reaches the trainer (Ctrl-C reaches the whole
process group; one sent to this process alone is passed on), which saves a checkpoint and exits;
this process then stops too (Interrupted, exit code 130: not an error), with the line that says
where it stood and how to continue: the same command. One that comes while a run is measured (or
the reports written) stops this process the same way, naming what it was doing; what it had not
finished is redone by the rerun (every file is written whole or not at all).
"""

import json
import signal
import subprocess
import time
from pathlib import Path

from compare import sweep
from compare.measure import measure_best, score_trial
from compare.plan import RunPlan, plan_suite
from compare.suite import RunSpec, Suite
from compare.wall import add_launch
from pipeline.format.errors import Interrupted, UsageError
from pipeline.format.files import write_text_atomically
from train import checkpoint


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # the trainer's (train.loop.StopRequest)


class RunStopped(UsageError):
    """A run's trainer stopped before its last step without being asked to: it failed (exit 1)."""

    exit_code = 1


def run_suite(suite: Suite, device=None) -> list[dict]:
    """Train and measure every trial not done yet; returns every run's result, in the suite's order."""
    plan_suite(suite)  # checks every setting of every run before any trains
    doing = ["starting"]

    def stop(signum, frame):
        raise Interrupted(f"interrupted ({signal.Signals(signum).name}) while {doing[0]}: rerun the "
                          "same command to continue")

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}  # train() passes them on
    try:
        return run_all(suite, device, doing)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_all(suite: Suite, device, doing: list[str]) -> list[dict]:
    """run_suite's loop; `doing[0]` says what it is doing, for an interruption's line."""
    from compare.report import write_reports

    results = []
    for run in suite.runs:
        result_path = suite.run_dir(run) / "result.json"
        if result_path.is_file() and sweep.is_current(suite, run, json.loads(result_path.read_text())):
            print(f"{run.name}: done before, skipped ({result_path})", flush=True)
        else:
            result = run_trials(suite, run, device, doing)
            write_text_atomically(result_path, json.dumps(result, indent=1) + "\n", on_error="usage")
            print(f"{run.name}: {summary_line(result)}", flush=True)
        results.append(json.loads(result_path.read_text()))
    doing[0] = "writing the reports"
    write_reports(suite, results)
    return results


def run_trials(suite: Suite, run: RunSpec, device, doing: list[str]) -> dict:
    """The run's grid, then its best setting at the other seeds, then the best one's other figures."""
    grid = [finish_trial(suite, trial, device, doing) for trial in sweep.grid_trials(suite, run)]
    best = sweep.best_index(grid)
    setting = sweep.settings(suite, run)[best]
    seeds = [finish_trial(suite, trial, device, doing)
             for trial in sweep.seed_trials(suite, run, setting, grid[best]["seed"])]
    result = sweep.summarize(suite, run, grid, seeds)
    doing[0] = f"measuring run {run.name!r}"
    print(f"{run.name}: timing generation and the other evaluations of its best setting", flush=True)
    return {**result, **measure_best(suite, sweep.trial(suite, run, setting), device)}


def finish_trial(suite: Suite, trial: RunSpec, device, doing: list[str]) -> dict:
    """Train (or resume) one trial and score it: OUT/runs/TRIAL/scores.json, or read from there."""
    path = suite.run_dir(trial) / "scores.json"
    if path.is_file():
        print(f"{trial.name}: done before, skipped ({path})", flush=True)
        return json.loads(path.read_text())
    plan = plan_suite(suite, [trial])[trial.name]  # planned before, but for a seed's trial
    print(f"{trial.name}: {plan.steps} steps of {plan.flops_per_step:.3g} FLOPs "
          f"({plan.positions_per_step:,} bytes each)", flush=True)
    doing[0] = f"training run {trial.name!r}"
    train(suite, trial, plan)
    doing[0] = f"measuring run {trial.name!r}"
    print(f"{trial.name}: evaluating on every byte of {suite.validation}", flush=True)
    scores = score_trial(suite, trial, plan, device)
    write_text_atomically(path, json.dumps(scores, indent=1) + "\n", on_error="usage")
    print(f"{trial.name}: {scores['bpb']:.4f} bits per byte after {scores['steps']:,} steps "
          f"({scores['wall_seconds']:,.0f} s); largest rise of the training loss "
          f"{scores['loss_rise']:.2f} bpb at step {scores['loss_rise_step']}", flush=True)
    return scores


def summary_line(result: dict) -> str:
    seeds = len(result["seeds"])
    spread = f" (mean of {seeds} seeds, {result['bpb_min']:.4f}–{result['bpb_max']:.4f})" if seeds > 1 else ""
    setting = ", ".join(f"{k} = {v}" for k, v in result["setting"].items())
    return (f"{result['bpb']:.4f} bits per byte{spread}" + (f" at {setting}" if setting else "")
            + f"; generation {result['generate_bytes_per_s']:,.0f} bytes/s")


def train(suite: Suite, run: RunSpec, plan: RunPlan) -> None:
    """Run (or resume) the run's trainer to its last step, adding its wall time (compare/wall.py)."""
    run_dir = suite.run_dir(run)
    if trained_steps(run_dir) >= plan.steps:
        return  # trained before, measuring was cut short
    command = suite.train_command(run, plan.steps)
    started = time.perf_counter()
    try:
        process = subprocess.Popen(command)
    except OSError as error:
        raise UsageError(f"launcher {suite.launcher[0]!r}: cannot start it ({error.strerror or error})") from None
    received = wait_passing_signals(process)
    run_dir.mkdir(parents=True, exist_ok=True)
    add_launch(run_dir, time.perf_counter() - started)
    step = trained_steps(run_dir)
    if received:
        raise Interrupted(f"run {run.name!r} interrupted ({signal.Signals(received).name}) at step {step} "
                          f"of {plan.steps}: rerun the same command to continue")
    if process.returncode != 0 or step < plan.steps:
        why = f"its trainer exited with {process.returncode}" if process.returncode else "it was stopped"
        raise RunStopped(f"run {run.name!r}: {why} at step {step} of {plan.steps}; rerun the same command "
                         "to continue from its last checkpoint")


def wait_passing_signals(process: subprocess.Popen) -> int | None:
    """Wait for the trainer; a SIGINT, SIGTERM or SIGUSR1 meanwhile is passed on to it (not acted on
    here, so that it can save). Returns the signal received, if any."""
    received = []

    def pass_on(signum, frame):
        received.append(signum)
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in STOP_SIGNALS}
    try:
        process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def trained_steps(run_dir: Path) -> int:
    """The step of the run's newest complete checkpoint, step-NNNNNN (0 without one)."""
    folder = checkpoint.latest(run_dir / checkpoint.CHECKPOINTS)
    return checkpoint.step_of(folder) if folder else 0
