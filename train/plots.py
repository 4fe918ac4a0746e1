"""Training and validation bits per byte of one or more runs, drawn from their metrics.jsonl.

Each run is one colour: validation bits per byte as markers joined by a line, training bits per
byte as a thin, lighter line. The x axis (`x`) is one of
    steps   optimizer steps
    bytes   bytes trained on (the targets counted in the train records' bytes_seen)
    flops   bytes × training FLOPs per byte of the run's model (model/flops.py, as MFU counts them)
    wall    seconds of training since the run's first record, pauses left out (training_seconds)
One run also gets a panel with its learning-rate schedule; with several, the schedules would
mostly overlap and the bits per byte get the whole width. matplotlib is imported only to draw.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import write_atomically

X_LABELS = {"steps": "optimizer step", "bytes": "bytes trained on", "flops": "training FLOPs",
            "wall": "seconds of training"}
LOG_X = ("bytes", "flops")  # these span orders of magnitude when runs of several sizes are compared
# A silence between two consecutive records longer than both of these is a pause (a stopped run
# waiting to be resumed), not training: wall time leaves it out.
PAUSE_S = 600
PAUSE_MEDIANS = 10  # × the run's median time between consecutive records


@dataclass
class Series:
    """One run's curves against the chosen x."""
    train_x: np.ndarray  # (train records,)
    train_bpb: np.ndarray  # (train records,)
    lr: np.ndarray  # (train records,)
    eval_x: np.ndarray  # (eval records,)
    eval_bpb: np.ndarray  # (eval records,)


def plot_runs(run_dirs: list[Path], out: Path, x: str = "steps", labels: list[str] | None = None) -> Path:
    """Draw the runs' curves against `x` (a key of X_LABELS) into `out` (written atomically);
    labels default to the directories' names. Returns `out`."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    run_dirs = [Path(d) for d in run_dirs]
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    names = unique_labels(labels or [d.name for d in run_dirs])
    all_series = [run_series(d, x) for d in run_dirs]  # read everything before drawing anything
    single = len(run_dirs) == 1
    figure, axes = plt.subplots(1, 2 if single else 1, figsize=(11, 4) if single else (8, 5), squeeze=False)
    left = axes[0, 0]
    for i, (name, series) in enumerate(zip(names, all_series)):
        colour = f"C{i % 10}"
        left.plot(series.train_x, series.train_bpb, color=colour, linewidth=0.8, alpha=0.5,
                  label=None if len(series.eval_x) else name)
        if len(series.eval_x):
            left.plot(series.eval_x, series.eval_bpb, "o-", color=colour, markersize=4, label=name)
    title = f"{names[0]}: bits per byte" if single else "bits per byte"
    left.set(xlabel=X_LABELS[x], ylabel="bits per byte", title=f"{title} (dots: validation, thin: training)")
    if single:
        right = axes[0, 1]
        right.plot(all_series[0].train_x, all_series[0].lr, color="tab:green", linewidth=1)
        right.set(xlabel=X_LABELS[x], ylabel="learning rate", title="schedule")
    for axis in axes[0]:
        if x in LOG_X:
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    left.legend()
    figure.tight_layout()
    write_atomically(out, lambda tmp: figure.savefig(tmp, dpi=110), on_error="usage")
    plt.close(figure)
    return out


def unique_labels(labels: list[str]) -> list[str]:
    """The labels, the second and later of equal ones numbered: ["run", "run (2)"]."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return unique


def run_series(run_dir: Path, x: str) -> Series:
    """One run's training and validation bits per byte (and lr) against `x`."""
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    try:
        if x == "steps":
            train_x, eval_x = steps_of(train), steps_of(evals)
        elif x in ("bytes", "flops"):
            scale = training_flops_per_byte_of(run_dir) if x == "flops" else 1.0
            train_x = scale * np.array([r["bytes_seen"] for r in train], dtype=np.float64)
            eval_x = scale * bytes_at_steps(steps_of(evals), train)
        elif x == "wall":
            seconds = training_seconds(np.array([r["time"] for r in records], dtype=np.float64))
            train_x = seconds[[r["kind"] == "train" for r in records]]
            eval_x = seconds[[r["kind"] == "eval" for r in records]]
        else:
            raise UsageError(f"x = {x!r}: choose one of {list(X_LABELS)}")
        return Series(train_x, values_of(train, "bpb"), values_of(train, "lr"), eval_x, values_of(evals, "bpb"))
    except (KeyError, TypeError) as error:  # a record written by something else than the trainer
        raise DataError(f"{run_dir / 'metrics.jsonl'}: a record lacks {error} or holds no number there") from None
    except ValueError as error:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: {error}") from None


def steps_of(records: list[dict]) -> np.ndarray:
    return np.array([r["step"] for r in records], dtype=np.float64)


def values_of(records: list[dict], name: str) -> np.ndarray:
    return np.array([r[name] for r in records], dtype=np.float64)


def bytes_at_steps(steps: np.ndarray, train: list[dict]) -> np.ndarray:
    """Bytes trained on by each of `steps`. Exact at the steps the train records log (bytes_seen),
    linear between them (from 0 bytes at step 0), and past the last logged step at the run's mean
    bytes per step. From the records rather than from the config (global batch × predicted
    positions): they count the targets actually trained on, padding excluded, so the figure is the
    trainer's own, and an evaluation (every eval_every steps) almost always falls on a logged step."""
    logged_steps = np.array([0.0, *steps_of(train)])
    logged_bytes = np.array([0.0, *values_of(train, "bytes_seen")])
    if np.any(np.diff(logged_steps) <= 0):
        raise ValueError("the train records' steps do not increase (two runs written into one directory?)")
    inside = np.interp(steps, logged_steps, logged_bytes)
    past = steps * logged_bytes[-1] / max(logged_steps[-1], 1)
    return np.where(steps > logged_steps[-1], past, inside)


def training_seconds(times: np.ndarray) -> np.ndarray:
    """(records,) seconds of training by each record, from their absolute times in file order.
    A silence between two consecutive records counts unless it is a pause: longer than PAUSE_S and
    than PAUSE_MEDIANS × the median silence. A stopped run's wait to be resumed is left out that
    way, and with it the time its resume redid and took to start: a resumed run's figure is short
    by that much. A quick restart (shorter than the thresholds) is counted, as the time it cost."""
    silences = np.diff(times, prepend=times[:1])  # (records,), 0 before the first
    threshold = max(PAUSE_S, PAUSE_MEDIANS * float(np.median(silences[1:]))) if len(times) > 1 else PAUSE_S
    return np.cumsum(np.where(silences > threshold, 0.0, silences))


def training_flops_per_byte_of(run_dir: Path) -> float:
    """Training FLOPs per byte of the run's model, rebuilt from its OUT/config.json."""
    import json

    from model.flops import training_flops_per_byte
    from train.config import stored_model_config

    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"{run_dir}: no config.json to count the model's FLOPs from; plot it "
                         "against --x steps or bytes")
    try:
        return training_flops_per_byte(stored_model_config(json.loads(path.read_text(encoding="utf-8"))))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not a run's resolved config ({error})") from None


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a run directory")


def read_records(run_dir: Path) -> list[dict]:
    """The records of the run's metrics.jsonl, in file order; at least one train record."""
    from train.metrics import read_metrics

    check_run_dir(run_dir)
    try:
        records = read_metrics(run_dir)
        has_train = any(r["kind"] == "train" for r in records)
    except (ValueError, KeyError, TypeError) as error:  # e.g. a line cut short by a full disk
        path = run_dir / "metrics.jsonl"
        raise DataError(f"{path}: not JSON lines of training records ({error})") from None
    if not has_train:
        raise UsageError(f"{run_dir}: no training metrics (metrics.jsonl) to plot")
    return records
