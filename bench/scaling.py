"""Benchmark: what a sequence of T bytes costs in time and memory, from T = 1,024 to the paper's
640×640 images (1,228,800 bytes), for MegaByte, the byte Transformer and PerceiverAR at an equal
parameter count.

    python bench/scaling.py                                  # every length, up to 10 minutes a run
    python bench/scaling.py --archs megabyte --lengths 8192 1228800 --checkpointing on
    python bench/scaling.py --plot scaling.png --json scaling.json

For each architecture and T, in a fresh process (so each peak is its own; on a CPU with the
trainer's allocator setting for long sequences, train/allocator.py):
(a) one training step, forward + backward (no optimizer: its cost does not depend on T), batch 1,
    fp32, with activation checkpointing on and off: seconds per byte and the rise of the peak
    resident memory (or CUDA's max allocated) per byte;
(b) generation of --new-bytes bytes after a prompt that fills the rest of the context, with the
    caches: the prompt's prefill (to the first new byte) and the other new bytes' bytes/s apart,
    each timed by the clock as generation reaches it.
MegaByte's patch P grows with T as the paper's presets do: the smallest of 8, 32, 192, 256 that
divides T and leaves at most 8,192 patches (8 for text lengths, 192 at 1,228,800). The baselines
have MegaByte's global width and the depth that matches its parameters (bench/common.py);
PerceiverAR reads with --latents latents. A run the last measured one predicts to take longer than
--limit seconds (its time scaled by T/T' and by what its attention grows with: MegaByte's patches,
the Transformer's bytes, PerceiverAR's fixed latents) or more memory than the machine has is
reported as skipped, not run; so is every longer T of that architecture after it.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import equal_size_baseline, machine, peak_memory_mb, synchronize  # noqa: E402  (bench/: runs as a script)
from model import MegaByteConfig, build_model, generate  # noqa: E402
from model.generate import generate_ids  # noqa: E402
from train.allocator import return_freed_memory  # noqa: E402

LENGTHS = [2**10, 2**12, 2**13, 2**14, 2**16, 2**18, 2**20, 1_228_800]
PATCHES = (8, 32, 192, 256)
MAX_PATCHES = 8192
ARCHS = ("megabyte", "transformer", "perceiver_ar")
WARM_UP_BYTES = 1024


def patch_size(T: int) -> int:
    """The smallest patch of PATCHES that divides T into at most MAX_PATCHES patches."""
    for P in PATCHES:
        if T % P == 0 and T // P <= MAX_PATCHES:
            return P
    raise ValueError(f"T={T}: no patch size of {PATCHES} divides it into at most {MAX_PATCHES} patches")


def config_for(args, arch: str, T: int, checkpointing: bool) -> MegaByteConfig:
    megabyte = MegaByteConfig(seq_len=T, patch_size=patch_size(T), global_dim=args.global_dim,
                              global_layers=args.global_layers, global_heads=args.global_heads,
                              local_dim=args.local_dim, local_layers=args.local_layers,
                              local_heads=args.local_heads, dropout=0.0, activation_checkpointing=checkpointing)
    if arch == "megabyte":
        return megabyte
    baseline = equal_size_baseline(megabyte, arch, args.latents if arch == "perceiver_ar" else 0)
    return MegaByteConfig.from_dict({**baseline.to_dict(), "activation_checkpointing": checkpointing})


def measure(job: dict) -> dict:
    """One measurement in this (fresh) process: a training step or a generation."""
    args = argparse.Namespace(**job["args"])
    T, device = job["T"], args.device
    if device == "cpu":
        return_freed_memory(T)  # as the trainer does on a CPU
    config = config_for(args, job["arch"], T, job["checkpointing"])
    torch.manual_seed(0)
    model = build_model(config).to(device)
    before = peak_memory_mb(device)
    ids = torch.randint(0, 256, (1, T), device=device)
    warm = ids[:, :WARM_UP_BYTES]  # first calls pay for allocations and kernel choices: not timed
    if job["kind"] == "train":
        model.train()
        model(warm, loss=True)[0].backward()
        model.zero_grad(set_to_none=True)
        synchronize(device)
        start = time.perf_counter()
        model(ids, loss=True)[0].backward()
        synchronize(device)
        seconds = time.perf_counter() - start
        result = dict(seconds=seconds)
    else:
        model.eval()
        new = min(args.new_bytes, T - 1)
        prompt = ids[:, : T - new]
        generate(model, warm[:, : len(warm[0]) // 2], 8, seed=0, stop_at_boundary=False)
        clock = FirstAndLast(device, new)
        start = time.perf_counter()
        generate_ids(model, prompt, new, generator=torch.Generator(device).manual_seed(0),
                     stop_at_boundary=False, progress=clock)
        first, last = clock.stamps
        # the prompt read (and the first byte sampled), then the other new bytes apart
        result = dict(seconds=last - start, prefill_seconds=first - start, new_bytes=new,
                      bytes_per_s=(new - 1) / (last - first))
    return dict(result, memory_mb=peak_memory_mb(device) - before, params=model.num_parameters(),
                patch_size=config.patch_size, layers=config.global_layers)


class FirstAndLast:
    """generate_ids' progress: the clock when the first new byte is sampled (after the prompt's
    prefill) and when the last one is, the device synchronised at both."""

    def __init__(self, device: str, total: int):
        self.device, self.total, self.count, self.stamps = device, total, 0, []

    def update(self, done: int) -> None:
        self.count += done
        if self.count in (1, self.total):
            synchronize(self.device)
            self.stamps.append(time.perf_counter())


def spawn(job: dict, limit: float) -> dict:
    """measure(job) in a fresh process, or why it gave nothing (a time-out, a crash: out of memory)."""
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return dict(skipped=f"over the limit of {limit:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return dict(skipped=f"failed: {last[:120]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def total_memory_mb() -> float:
    """What the machine has: its RAM, or the GPU's memory."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def attention_span(arch: str, T: int, latents: int) -> int:
    """What a step's attention grows with, per byte: MegaByte's global model attends over T/P
    patches, the Transformer over T bytes; PerceiverAR's latents attend to all T bytes, a cost per
    byte that its latents fix."""
    return {"megabyte": T // patch_size(T), "transformer": T, "perceiver_ar": min(latents, T)}[arch]


def predicted(last: dict | None, arch: str, T: int, latents: int) -> tuple[float, float]:
    """(seconds, MB) a run at T will take at least, from the last one measured (at T'): its time
    scaled by T/T' and by the attention's growth (its worst case: a step all attention), memory by
    T/T' (every architecture keeps at least linear state)."""
    if last is None:
        return 0.0, 0.0
    grow = T / last["T"]
    attention = max(1.0, attention_span(arch, T, latents) / attention_span(arch, last["T"], latents))
    return last["seconds"] * grow * attention, last["memory_mb"] * grow


def sweep(args, arch: str, kind: str, checkpointing: bool) -> list[dict]:
    """Every length of one architecture and kind, in order; skipped from the first that would not fit."""
    rows, last, stop = [], None, ""
    for T in args.lengths:
        row = dict(arch=arch, kind=kind, checkpointing=checkpointing, T=T)
        seconds, memory = predicted(last, arch, T, args.latents)
        if not stop and seconds > args.limit:
            stop = f"predicted ≥ {seconds:.0f} s from T={last['T']:,}, over the limit of {args.limit:.0f} s"
        if not stop and memory > args.memory_fraction * total_memory_mb():
            stop = f"predicted ≥ {memory / 1024:.1f} GB from T={last['T']:,}, over the machine's memory"
        if stop:
            rows.append(dict(row, skipped=stop))
            print(line(rows[-1]), flush=True)
            continue
        job = dict(kind=kind, arch=arch, T=T, checkpointing=checkpointing, args=vars(args))
        result = spawn(job, args.limit)
        rows.append(dict(row, **result))
        stop = f"not run: T={T:,} {result['skipped']}" if "skipped" in result else ""
        last = rows[-1] if not stop else last
        print(line(rows[-1]), flush=True)
    return rows


def line(row: dict) -> str:
    label = f"{row['arch']:<13}{row['kind']:<9}{'ckpt' if row['checkpointing'] else '':<5}{row['T']:>10,}"
    if "skipped" in row:
        return f"{label}  skipped: {row['skipped']}"
    memory = f"{row['memory_mb'] * 1024 / row['T']:>9.2f} KB/B"
    if row["kind"] == "generate":
        return (f"{label}  P={row['patch_size']:<4}prefill {row['prefill_seconds']:>8.2f} s, "
                f"{row['bytes_per_s']:>8,.0f} new B/s{memory}")
    per_byte = row["seconds"] / row["T"] * 1e6
    return f"{label}  P={row['patch_size']:<4}{row['seconds']:>9.2f} s{per_byte:>9.2f} µs/B{memory}"


def plot(rows: list[dict], path: str):
    """Time and memory per byte of the training steps against T, log–log, a line per run kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = {}
    for row in rows:
        if row["kind"] == "train" and "skipped" not in row:
            name = f"{row['arch']}{' (checkpointing)' if row['checkpointing'] else ''}"
            series.setdefault(name, []).append(row)
    for name, points in series.items():
        T = [p["T"] for p in points]
        time_axis.plot(T, [p["seconds"] / p["T"] * 1e6 for p in points], marker="o", label=name)
        memory_axis.plot(T, [p["memory_mb"] * 1024 / p["T"] for p in points], marker="o", label=name)
    for axis, label in ((time_axis, "training step, µs per byte"), (memory_axis, "peak memory, KB per byte")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length T (bytes)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(rows: list[dict]) -> str:
    """A markdown table, a line per architecture and T: each training step (µs and KB per byte)
    and generation (prefill seconds, new bytes per second); "—" where the run was skipped, "failed"
    where it ran and gave nothing (killed, out of memory)."""
    cells = {}
    for row in rows:
        kind = "generate" if row["kind"] == "generate" else "ckpt" if row["checkpointing"] else "train"
        if "skipped" in row:
            text = "failed" if row["skipped"].startswith("failed") else "—"
        elif kind == "generate":
            text = f"{row['prefill_seconds']:,.2f} s, {row['bytes_per_s']:,.0f} B/s"
        else:
            text = f"{row['seconds'] / row['T'] * 1e6:,.0f} µs, {row['memory_mb'] * 1024 / row['T']:,.1f} KB"
        cells.setdefault((row["arch"], row["T"]), {})[kind] = text
        cells[row["arch"], row["T"]].setdefault("P", patch_size(row["T"]) if row["arch"] == "megabyte" else 1)
    lines = ["| architecture | T | P | training step, a byte | with checkpointing, a byte | generation: prefill, new bytes |",
             "|---|---:|---:|---:|---:|---:|"]
    for (arch, T), found in sorted(cells.items(), key=lambda item: (ARCHS.index(item[0][0]), item[0][1])):
        lines.append(f"| {arch} | {T:,} | {found['P']} | {found.get('train', '')} | {found.get('ckpt', '')} | "
                     f"{found.get('generate', '')} |")
    return "\n".join(lines)


def merged(paths: list[str]) -> list[dict]:
    """The rows of several --json files, a later file's row replacing an earlier one's of the same
    architecture, kind, checkpointing and T (a sweep run again in part)."""
    rows = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["rows"]:
                rows[row["arch"], row["kind"], row["checkpointing"], row["T"]] = row
    return sorted(rows.values(), key=lambda r: (ARCHS.index(r["arch"]), r["kind"], r["checkpointing"], r["T"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="sequence lengths T, ascending")
    parser.add_argument("--checkpointing", choices=["on", "off", "both"], default="both")
    parser.add_argument("--kinds", nargs="+", default=["train", "generate"], choices=["train", "generate"])
    parser.add_argument("--global-dim", type=int, default=768)
    parser.add_argument("--global-layers", type=int, default=2)
    parser.add_argument("--global-heads", type=int, default=12)
    parser.add_argument("--local-dim", type=int, default=128)
    parser.add_argument("--local-layers", type=int, default=2)
    parser.add_argument("--local-heads", type=int, default=2)
    parser.add_argument("--latents", type=int, default=1024, help="PerceiverAR's latents (fewer where T is shorter)")
    parser.add_argument("--new-bytes", type=int, default=1024, help="bytes generated after the prompt")
    parser.add_argument("--limit", type=float, default=600, help="seconds a run may take")
    parser.add_argument("--memory-fraction", type=float, default=0.8, help="of the machine's memory a run may use")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--plot", help="write the log–log plot of the training steps here (PNG)")
    parser.add_argument("--table", action="store_true", help="print the rows as a markdown table at the end")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="run nothing: the rows of these --json files (a later one's replacing the same "
                             "runs of an earlier one) go to --json, --plot and --table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    if args.lengths != sorted(args.lengths):
        parser.error("--lengths must be ascending: each run's prediction comes from the one before")
    for T in args.lengths:
        try:
            patch_size(T)
        except ValueError as error:
            parser.error(str(error))
    if args.merge:
        with open(args.merge[0]) as f:
            measured_on = json.load(f)["machine"]
        rows = merged(args.merge)
    else:
        measured_on = machine(f"torch {torch.__version__}", f"{torch.get_num_threads()} threads")
        print(f"machine: {measured_on}, {args.device}")
        print(f"MegaByte: global {args.global_dim}×{args.global_layers}, local {args.local_dim}×"
              f"{args.local_layers}; baselines at its parameters; batch 1, fp32, limit {args.limit:.0f} s a run")
        modes = {"on": [True], "off": [False], "both": [False, True]}[args.checkpointing]
        rows = []
        for arch in args.archs:
            for kind in args.kinds:
                for checkpointing in (modes if kind == "train" else [False]):
                    rows += sweep(args, arch, kind, checkpointing)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(dict(machine=measured_on, args=vars(args), rows=rows), out, indent=1)
    if args.plot:
        plot(rows, args.plot)
    if args.table:
        print(table(rows))


if __name__ == "__main__":
    main()
