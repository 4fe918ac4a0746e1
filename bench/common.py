"""What the benchmark scripts share: the machine line every table starts with, KEY=VALUE model
settings, peak memory, and the harness of the two converter benchmarks (convert_image.py,
convert_audio.py): bare work against the converter, 1 and 2 processes, half the files and all of
them.

The scripts run as `python bench/NAME.py`, which puts bench/ on sys.path: they import this as
`common`.
"""

import json
import multiprocessing
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.convert.driver import ConvertOptions, convert

if TYPE_CHECKING:  # the converter benchmarks do without torch and the model
    from model import MegaByteConfig


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or "unknown CPU"


def machine(*versions: str) -> str:
    """CPU, cores and Python, then what else the figures depend on (e.g. "zstandard 0.23.0")."""
    return ", ".join([cpu_name(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}",
                      *versions])


def peak_memory_mb(device: str) -> float:
    """The peak so far: CUDA's max allocated, or on a CPU the process's peak resident set (VmHWM)."""
    if device == "cuda":
        import torch  # the converter benchmarks do without it

        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def synchronize(device) -> None:
    """Wait for the GPU's queued work (device: "cuda", "cuda:0" or a torch.device), so that a clock
    read after it times that work."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def parse_setting(item: str) -> tuple[str, object]:
    """"key=value" → (key, value), the value read as JSON where it is JSON (numbers, true, false),
    else kept as a string; ValueError without the "="."""
    key, equals, value = item.partition("=")
    if not equals:
        raise ValueError(f"{item!r}: write KEY=VALUE, e.g. seq_len=2048")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value



def equal_size_baseline(config: "MegaByteConfig", architecture: str = "transformer", latents: int = 0) -> "MegaByteConfig":
    """The baseline (transformer or perceiver_ar) at MegaByte's global width and heads, with the
    depth whose parameter count is nearest. Position tables are left out of the match: they are
    lookups, not compute, and at long T the baseline's T × D table would otherwise cost it a layer."""
    import torch

    from model import MegaByteConfig, build_model

    def size(cfg):
        model = build_model(cfg)
        return model.num_parameters() - (model.pos_embed.weight.numel() if model.pos_embed is not None else 0)

    with torch.device("meta"):
        target = size(config)
        candidates = []
        for layers in range(1, 65):
            baseline = MegaByteConfig(architecture=architecture, patch_size=1, local_layers=0, seq_len=config.seq_len,
                                      global_dim=config.global_dim, global_layers=layers,
                                      global_heads=config.global_heads, dropout=0.0,
                                      latents=min(latents, config.seq_len))
            candidates.append((abs(size(baseline) - target), layers, baseline))
    return min(candidates, key=lambda c: c[:2])[2]


# ---------------------------------------------------------------------------------------------
# converter benchmarks


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_headroom(n: int = 3_000_000) -> float:
    """How much faster 2 processes do 2 units of pure CPU work than 1 process: about 2 on an idle
    2-core machine, less when other work shares it. The 2-worker ratios are bounded by this."""
    start = time.perf_counter()
    spin(n), spin(n)
    serial = time.perf_counter() - start
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(spin, [1, 1])  # started
        start = time.perf_counter()
        pool.map(spin, [n, n], chunksize=1)
        return serial / (time.perf_counter() - start)


def run_convert(converter, files: list[Path], out: Path, workers: int, compression: str = "zstd") -> int:
    """Convert `files` afresh into `out`; returns the bytes of the shards."""
    shutil.rmtree(out, ignore_errors=True)
    options = ConvertOptions(out=out, name="bench", compression=compression, workers=workers,
                             progress=False)
    manifest = convert(converter, files, options, {"benchmark": True})
    assert manifest.totals["samples"] + manifest.totals["skipped"] == len(files), manifest.totals
    return manifest.totals["file_bytes"]


def measure(run_bare, converter, files: list[Path], out: Path, repeats: int) -> tuple[dict, tuple]:
    """Time `run_bare(files, processes)` and the converter with 1 and 2 processes, each over half
    the files and then all of them, `repeats` times: ({(name, count): [seconds per repeat],
    "headroom": [parallel_headroom per repeat]}, counts). The runs are interleaved so that
    drift in the machine's load hits every row alike."""
    runs = {"bare 1": lambda n: run_bare(files[:n], 1), "bare 2": lambda n: run_bare(files[:n], 2),
            "convert 1": lambda n: run_convert(converter, files[:n], out, 1),
            "convert 2": lambda n: run_convert(converter, files[:n], out, 2)}
    counts, times = (len(files) // 2, len(files)), {"headroom": []}
    for _ in range(repeats):
        times["headroom"].append(parallel_headroom())
        for name, run in runs.items():
            for count in counts:
                start = time.perf_counter()
                run(count)
                times.setdefault((name, count), []).append(time.perf_counter() - start)
    return times, counts


def report(times: dict, counts: tuple[int, int], unit: str, scale: float = 1.0) -> None:
    """The table: end-to-end rates of the larger run (best repeat, worker start included) and
    steady rates: the extra items over the extra time from the smaller run to the larger one
    within a repeat (median of the repeats), so that costs paid once per conversion (spawning
    workers, their imports, the manifest) cancel out."""
    small, large = counts
    headroom = times["headroom"]
    print(f"parallel headroom: 2 processes did pure CPU work {statistics.median(headroom):.2f}× "
          f"(max {max(headroom):.2f}×) as fast as 1; 2.0 on an idle 2-core machine")

    def rates(name):
        steady = [(large - small) * scale / (t_large - t_small)
                  for t_small, t_large in zip(times[name, small], times[name, large]) if t_large > t_small]
        return large * scale / min(times[name, large]), statistics.median(steady or [float("nan")])

    r = {name: rates(name) for name in ("bare 1", "bare 2", "convert 1", "convert 2")}
    print(f"{'':12}{unit + ' end-to-end':>24}{unit + ' steady':>20}  ratios (steady)")
    notes = {"bare 1": "1.00",
             "bare 2": f"{r['bare 2'][1] / r['bare 1'][1]:.2f} of bare 1",
             "convert 1": f"{r['convert 1'][1] / r['bare 1'][1]:.2f} of bare 1 (target ≥ 0.8)",
             "convert 2": f"{r['convert 2'][1] / r['convert 1'][1]:.2f} of convert 1 (target ≥ 1.7), "
                          f"{r['convert 2'][1] / r['bare 2'][1]:.2f} of bare 2"}
    for name, (end_to_end, steady) in r.items():
        print(f"{name:12}{end_to_end:>24.1f}{steady:>20.1f}  {notes[name]}")
    print(f"end-to-end ratios: convert 1 / bare 1 {r['convert 1'][0] / r['bare 1'][0]:.2f}, "
          f"convert 2 / convert 1 {r['convert 2'][0] / r['convert 1'][0]:.2f}")
