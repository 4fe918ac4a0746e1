"""`megabyte plot RUN_DIR`: training and validation bits per byte against steps, as a PNG."""

from pathlib import Path

from pipeline.format.errors import UsageError


def register(subparsers) -> None:
    plot = subparsers.add_parser("plot", help="draw a run's loss / bits-per-byte curves to a PNG")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training output directory")
    plot.add_argument("--out", type=Path, default=None, help="PNG to write (default: RUN_DIR/curves.png)")
    plot.set_defaults(func=cmd_plot)


def plot_run(run_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    from train.metrics import read_metrics

    records = read_metrics(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not train:
        raise UsageError(f"{run_dir}: no training metrics (metrics.jsonl) to plot")
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
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def cmd_plot(args) -> int:
    out = plot_run(args.run_dir, args.out or args.run_dir / "curves.png")
    print(f"{out}: written")
    return 0
