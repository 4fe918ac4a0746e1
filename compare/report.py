"""A suite's results: OUT/results.json (every figure), OUT/results.md (a table), OUT/curves.png.

The curves are each run's in-training validations (curve_batches batches of the validation set)
against the training FLOPs spent by then; the table's bits per byte are the final evaluation on
every byte (compare/measure.py).
"""

import datetime
import json
import os
import platform
import shlex
import sys

from compare.suite import SHIPPED_SUITES, Suite
from pipeline.format.files import write_text_atomically
from train.plots import plot_runs

# results.md's columns: heading, the result's key, its format
COLUMNS = [("run", "name", "{}"), ("preset", "preset", "{}"), ("parameters", "parameters", "{:,}"),
           ("FLOPs/byte", "flops_per_byte", "{:.3g}"), ("steps", "steps", "{:,}"),
           ("bytes trained", "bytes_trained", "{:.3g}"), ("FLOPs spent", "flops_spent", "{:.3g}"),
           ("wall (s)", "wall_seconds", "{:,.0f}"), ("train bytes/s", "train_bytes_per_s", "{:,.0f}"),
           ("bpb", "bpb", "{:.4f}"), ("bpb strided", "bpb_strided", "{:.4f}"),
           ("generate bytes/s", "generate_bytes_per_s", "{:,.0f}")]


def write_reports(suite: Suite, results: list[dict]) -> None:
    header = {"title": suite.title, "suite": suite_name(suite), "date": datetime.date.today().isoformat(),
              "machine": machine(), "command": command(), "train": suite.train, "validation": suite.validation,
              "budget": suite.budget_text(), "generate_bytes": suite.generate_bytes}
    text = json.dumps({**header, "runs": results}, indent=1) + "\n"
    write_text_atomically(suite.out_dir / "results.json", text, on_error="usage")
    markdown = results_markdown(header, results)
    write_text_atomically(suite.out_dir / "results.md", markdown, on_error="usage")
    plot_runs([suite.run_dir(run) for run in suite.runs], suite.out_dir / "curves.png", x="flops",
              labels=[run.name for run in suite.runs])
    print(markdown)
    print(f"{suite.out_dir}: results.md, results.json, curves.png written")


def results_markdown(header: dict, results: list[dict]) -> str:
    extra = sorted({key for result in results for key in result if key.startswith("bpb_sliding")})
    columns = COLUMNS + [(key.removeprefix("bpb_").replace("_", " "), key, "{:.4f}") for key in extra]
    lines = [f"# {header['title']}", "",
             f"{header['date']}, {header['machine']}: `{header['command']}`", "",
             f"Budget per run: {header['budget']}. Train on `{header['train']}`, bits per byte on every "
             f"byte of `{header['validation']}`; generation of {header['generate_bytes']:,} bytes, batch 1.", "",
             "| " + " | ".join(heading for heading, _, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for result in results:
        cells = [cell(result, key, form) for _, key, form in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell(result: dict, key: str, form: str) -> str:
    value = result.get(key)
    return "–" if value is None else form.format(value)


def suite_name(suite: Suite) -> str:
    """A shipped suite by its place in the project, any other by the path it was given as."""
    shipped = suite.path.parent.resolve() == SHIPPED_SUITES.resolve()
    return f"compare/suites/{suite.path.name}" if shipped else str(suite.path)


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{device}, {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}"


def command() -> str:
    return "megabyte " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "megabyte compare"
