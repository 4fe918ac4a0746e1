"""Text conversion throughput against zstd alone, worker scaling, and peak RSS vs corpus size.

Corpus: the Python standard library's .py sources (site-packages excluded), copied `--repeat`
times into a temporary folder so that it holds at least `--min-mb` MB of real text. Measured in
one run, each conversion in a fresh subprocess (`megabyte convert text`):

  zstd alone   python zstandard, same level, same documents, one core, files already in memory
  convert w=1  the whole converter in one process (read, compress, tar, sha256, fsync)
  convert w=2  two worker processes
  RSS          peak RSS of the converting process for the corpus and for half of it

    python bench/convert_text.py [--min-mb 200] [--level 3]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from common import machine  # bench/: this runs as a script
from pipeline.convert.stdlib import stdlib_sources

REPO = Path(__file__).resolve().parents[1]


def build_corpus(folder: Path, min_bytes: int) -> tuple[int, int]:
    """Copy the stdlib sources into folder/copyN/ until at least min_bytes; return (files, bytes)."""
    _, sources = stdlib_sources()
    files = size = copy = 0
    while size < min_bytes:
        for source in sources:
            target = folder / f"copy{copy}" / source.name.replace(".py", f"-{files}.py")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            size += target.stat().st_size
            files += 1
        copy += 1
    return files, size


def zstd_alone(folder: Path, level: int) -> tuple[float, int]:
    """Seconds to compress every file of the corpus (read beforehand), and the bytes."""
    docs = [p.read_bytes() for p in sorted(folder.rglob("*.py"))]
    cctx = zstandard.ZstdCompressor(level=level)
    start = time.perf_counter()
    for doc in docs:
        cctx.compress(doc)
    return time.perf_counter() - start, sum(map(len, docs))


def convert(folder: Path, out: Path, workers: int, level: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the main process) of one `megabyte convert text` run."""
    args = [sys.executable, "-m", "tools.cli", "convert", "text", str(folder), "--out", str(out),
            "--workers", str(workers), "--level", str(level), "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"conversion failed: {' '.join(args)}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-mb", type=float, default=200, help="corpus size in MB (default: 200)")
    parser.add_argument("--level", type=int, default=3, help="zstd level (default: 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, size = build_corpus(tmp / "corpus", int(args.min_mb * 1e6))
        half_files, half_size = build_corpus(tmp / "half", int(args.min_mb * 1e6 / 2))
        mb = size / 1e6
        one, rss_one = convert(tmp / "corpus", tmp / "out1", 1, args.level)
        two, _ = convert(tmp / "corpus", tmp / "out2", 2, args.level)
        _, rss_half = convert(tmp / "half", tmp / "outh", 1, args.level)
        # last: a child's ru_maxrss starts from the parent's RSS at fork, so the documents this
        # loads into memory would inflate the RSS figures above
        zstd_seconds, _ = zstd_alone(tmp / "corpus", args.level)

    print(f"machine: {machine(f'zstandard {zstandard.__version__}')}")
    print(f"corpus: {files} stdlib .py files, {mb:.1f} MB, zstd level {args.level}\n")
    print(f"{'what':<22} {'seconds':>8} {'MB/s':>8} {'ratio':>26}")
    print(f"{'zstd alone (baseline)':<22} {zstd_seconds:8.2f} {mb / zstd_seconds:8.1f} {'1.00':>26}")
    print(f"{'convert, 1 worker':<22} {one:8.2f} {mb / one:8.1f} "
          f"{f'{zstd_seconds / one:.2f} of zstd (target 0.70)':>26}")
    print(f"{'convert, 2 workers':<22} {two:8.2f} {mb / two:8.1f} "
          f"{f'{one / two:.2f} x 1 worker (target 1.7)':>26}")
    print(f"\npeak RSS, 1 worker: {rss_one:.0f} MiB for {mb:.0f} MB, {rss_half:.0f} MiB for "
          f"{half_size / 1e6:.0f} MB ({half_files} files): ratio {rss_one / rss_half:.2f} (target ~1.0)")


if __name__ == "__main__":
    main()
