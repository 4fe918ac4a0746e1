"""A suite's results: OUT/results.json (every figure), OUT/results.md (tables), OUT/curves.png.

results.md has one row per run (its best setting; bits per byte the mean over its seeds, with their
range), the ordering of the runs where the seeds' spread allows one, notes (a best setting at the
edge of its grid, a generation timed on a busy machine, a SpaceByte run's bytes per patch and share
of untrained bytes), the full grid of every sweep, and the scale of the validation bytes (unigram
entropy; gzip, bzip2 and xz). The curves are each run's best setting's in-training validations
against the training FLOPs spent by then; the tables' bits per byte are the final evaluation on
every byte (compare/measure.py).
"""

import datetime
import json
import os
import platform
import shlex
import sys

from compare.suite import SHIPPED_SUITES, Suite
from compare.sweep import trial
from pipeline.format.files import write_text_atomically
from pipeline.format.stats import compressed_bits_per_byte, dataset_chunks, dataset_stats
from train.plots import plot_runs

# results.md's columns: heading, the result's key, its format
COLUMNS = [("run", "name", "{}"), ("preset", "preset", "{}"), ("setting", "setting", "{}"),
           ("parameters", "parameters", "{:,}"), ("FLOPs/byte", "flops_per_byte", "{:.3g}"),
           ("steps", "steps", "{:,}"), ("bytes trained", "bytes_trained", "{:.3g}"),
           ("FLOPs spent", "flops_spent", "{:.3g}"), ("wall (s)", "wall_seconds", "{:,.0f}"),
           ("train bytes/s", "train_bytes_per_s", "{:,.0f}"), ("bpb", "bpb", "{:.4f}"),
           ("seeds' range", "bpb_min", "{}"), ("bpb strided", "bpb_strided", "{:.4f}"),
           ("loss rise", "loss_rise", "{:.2f}"), ("generate bytes/s", "generate_bytes_per_s", "{:,.0f}")]
GRID_COLUMNS = [("run", "name", "{}"), ("setting", "set", "{}"), ("steps", "steps", "{:,}"),
                ("wall (s)", "wall_seconds", "{:,.0f}"), ("bpb", "bpb", "{:.4f}"),
                ("loss rise", "loss_rise", "{:.2f}"), ("at step", "loss_rise_step", "{:,}")]


def write_reports(suite: Suite, results: list[dict]) -> None:
    header = {"title": suite.title, "suite": suite_name(suite), "date": datetime.date.today().isoformat(),
              "machine": machine(), "command": command(), "train": suite.train, "validation": suite.validation,
              "budget": suite.budget_text(), "seeds": suite.seeds, "generate_bytes": suite.generate_bytes,
              "cores": os.cpu_count(), "scale": validation_scale(suite)}
    text = json.dumps({**header, "runs": results}, indent=1) + "\n"
    write_text_atomically(suite.out_dir / "results.json", text, on_error="usage")
    markdown = results_markdown(header, results)
    write_text_atomically(suite.out_dir / "results.md", markdown, on_error="usage")
    best = [trial(suite, run, result["setting"]) for run, result in zip(suite.runs, results)]
    plot_runs([suite.run_dir(t) for t in best], suite.out_dir / "curves.png", x="flops",
              labels=[f"{run.name} {setting_text(r['setting'])}".strip() for run, r in zip(suite.runs, results)])
    print(markdown)
    print(f"{suite.out_dir}: results.md, results.json, curves.png written")


def validation_scale(suite: Suite) -> dict:
    """The validation bytes' unigram entropy and what each compressor makes of them, in bits per
    byte: kept in OUT/scale.json (computed once; xz -9 takes seconds per megabyte)."""
    path = suite.out_dir / "scale.json"
    if path.is_file():
        return json.loads(path.read_text())
    scale = {"unigram entropy": dataset_stats([suite.validation]).entropy_bits,
             **compressed_bits_per_byte(dataset_chunks([suite.validation]))}
    write_text_atomically(path, json.dumps(scale, indent=1) + "\n", on_error="usage")
    return scale


def results_markdown(header: dict, results: list[dict]) -> str:
    extra = sorted({key for result in results for key in result if key.startswith("bpb_sliding")})
    columns = COLUMNS + [(key.removeprefix("bpb_").replace("_", " "), key, "{:.4f}") for key in extra]
    seeds = header["seeds"]
    lines = [f"# {header['title']}", "",
             f"{header['date']}, {header['machine']}: `{header['command']}`", "",
             f"Budget per run: {header['budget']}. Train on `{header['train']}`, bits per byte on every "
             f"byte of `{header['validation']}`" + (f", the mean of {seeds} seeds of each run's best setting"
                                                    if seeds > 1 else "")
             + f"; generation of {header['generate_bytes']:,} bytes, batch 1 (the median of its timings). "
             "Loss rise: the largest rise of the training loss above its lowest point before (bits per byte).",
             "", table(columns, results), "", ordering(results, seeds)]
    lines += [note for result in results for note in run_notes(result, header["cores"])]
    grids = [{"name": result["name"], **entry} for result in results for entry in result.get("sweep", [])]
    if grids:
        lines += ["", "Every setting tried (one seed each; **bold**: the run's best):", "",
                  table(GRID_COLUMNS, grids)]
    scale = ", ".join(f"{name} {bits:.3f}" for name, bits in header["scale"].items())
    lines += ["", f"The same validation bytes, for scale (bits per byte): {scale}."]
    return "\n".join(lines) + "\n"


def table(columns: list[tuple], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(heading for heading, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [cell(row, key, form) for _, key, form in columns]
        if row.get("best"):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(row: dict, key: str, form: str) -> str:
    value = row.get(key)
    if key in ("setting", "set"):
        return setting_text(value or {}) or "–"
    if key == "bpb_min":  # the seeds' range
        return f"{row['bpb_min']:.4f}–{row['bpb_max']:.4f}" if len(row.get("seeds", [])) > 1 else "–"
    return "–" if value is None else form.format(value)


def setting_text(setting: dict) -> str:
    return ", ".join(f"{key.split('.')[-1]} {value}" for key, value in setting.items())


def ordering(results: list[dict], seeds: int) -> str:
    """The runs from best to worst: "<" where the gap exceeds the spread (the better run's worst
    seed beats the other's best), "≈" where the seeds' ranges overlap."""
    ranked = sorted(results, key=lambda r: r["bpb"])
    text = ranked[0]["name"]
    for better, worse in zip(ranked, ranked[1:]):
        text += f" {'<' if better['bpb_max'] < worse['bpb_min'] else '≈'} {worse['name']}"
    if seeds == 1:
        return (f"Ordering by bits per byte: {text} (one seed: no spread measured, so no gap is known "
                "to exceed it; set seeds = 2 or more).")
    return (f"Ordering by mean bits per byte over {seeds} seeds: {text} ('<': the gap exceeds the "
            "seeds' spread; '≈': their ranges overlap, no ordering called).")


def run_notes(result: dict, cores: int) -> list[str]:
    notes = []
    if result.get("edge"):
        notes.append(f"- {result['name']}: best at the edge of its grid ({', '.join(result['edge'])}): "
                     "widen the grid.")
    if "mean_patch_bytes" in result:  # SpaceByte
        notes.append(f"- {result['name']}: patches of {result['mean_patch_bytes']:.2f} bytes on average on the "
                     f"validation bytes; {100 * result['untrained_fraction']:.1f}% of them past its global "
                     "positions (no global output, not trained).")
    if result.get("generate_load", 0) > cores:
        notes.append(f"- {result['name']}: generation timed while the machine's load "
                     f"({result['generate_load']:.1f}) exceeded its {cores} cores: the figure is low.")
    return notes


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
