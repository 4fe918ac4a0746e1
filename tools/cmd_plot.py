"""`megabyte plot RUN...`: training and validation bits per byte of one or more runs, as a PNG
(drawn by train/plots.py, which says what each x axis counts)."""

from pathlib import Path

from pipeline.format.errors import UsageError
from tools.outputs import check_output_file
from train.plots import X_LABELS, check_run_dir, plot_runs


def register(subparsers) -> None:
    plot = subparsers.add_parser("plot", help="draw the bits-per-byte curves of one or more runs to a PNG")
    plot.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="training output directories")
    plot.add_argument("--x", choices=list(X_LABELS), default="steps",
                      help="the x axis: optimizer steps (default), bytes trained on, training FLOPs "
                           "(from the run's config.json) or wall-clock seconds of training (the wait before "
                           "a resume left out)")
    plot.add_argument("--out", type=Path, default=None,
                      help="PNG to write (default with one run: RUN/curves.png; needed with several)")
    plot.set_defaults(func=cmd_plot)


def check_plot_output(out: Path) -> None:
    """--out names a new or old file, in a folder that exists, of a format matplotlib draws."""
    from matplotlib.backend_bases import FigureCanvasBase

    check_output_file(out, "--out")
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise UsageError(f"--out {out}: cannot draw a {out.suffix or 'suffixless'} file; end the name "
                         f"with one of .{', .'.join(sorted(formats))}")


def cmd_plot(args) -> int:
    for run_dir in args.run_dirs:
        check_run_dir(run_dir)
    if args.out is None and len(args.run_dirs) > 1:
        raise UsageError(f"--out is needed with {len(args.run_dirs)} runs: name the PNG to write")
    out = args.out or args.run_dirs[0] / "curves.png"
    check_plot_output(out)
    plot_runs(args.run_dirs, out, args.x)
    print(f"{out}: written")
    return 0
