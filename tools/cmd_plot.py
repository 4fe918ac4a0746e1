"""`megabyte plot RUN_DIR`: training and validation bits per byte against steps, as a PNG."""

from pathlib import Path

from pipeline.format.errors import DataError, UsageError
from tools.outputs import check_output_file, write_atomically


def register(subparsers) -> None:
    plot = subparsers.add_parser("plot", help="draw a run's loss / bits-per-byte curves to a PNG")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training output directory")
    plot.add_argument("--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/curves.png)")
    plot.set_defaults(func=cmd_plot)


def plot_run(run_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train, evals = read_curves(run_dir)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["step"] for r in train], [r["bpb"] for r in train], label="train", linewidth=1)
    if evals:
        left.plot([r["step"] for r in evals], [r["bpb"] for r in evals], "o-", label="validation")
    left.set(xlabel="optimizer step", ylabel="bits per byte", title=f"{run_dir.name}: bits per byte")
    left.grid(alpha=0.3)
    left.legend()
    right.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:green", linewidth=1)
    right.set(xlabel="optimizer step", ylabel="learning rate", title="schedule")
    right.grid(alpha=0.3)
    figure.tight_layout()
    write_atomically(out, lambda tmp: figure.savefig(tmp, dpi=110))
    plt.close(figure)
    return out


def read_curves(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of the run's metrics.jsonl."""
    from train.metrics import read_metrics

    try:
        records = read_metrics(run_dir)
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
    except (ValueError, KeyError, TypeError) as error:  # e.g. a line cut short by a full disk
        path = run_dir / "metrics.jsonl"
        raise DataError(f"{path}: not JSON lines of training records ({error})") from None
    if not train:
        raise UsageError(f"{run_dir}: no training metrics (metrics.jsonl) to plot")
    return train, evals


def check_plot_output(out: Path) -> None:
    """--out names a new or old file, in a folder that exists, of a format matplotlib draws."""
    from matplotlib.backend_bases import FigureCanvasBase

    check_output_file(out, "--out")
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise UsageError(f"--out {out}: cannot draw a {out.suffix or 'suffixless'} file; end the name "
                         f"with one of .{', .'.join(sorted(formats))}")


def cmd_plot(args) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(f"{args.run_dir}: not a run directory")
    out = args.out or args.run_dir / "curves.png"
    check_plot_output(out)
    plot_run(args.run_dir, out)
    print(f"{out}: written")
    return 0
