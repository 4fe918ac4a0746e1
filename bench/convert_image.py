"""Benchmark: `convert image` throughput beside the bare Pillow work on the same files.

    python bench/convert_image.py [--images 1000] [--size 64] [--repeats 3]

Makes ImageNet-like JPEGs (500×375, quality 90) in a temporary ImageFolder, then times
    bare 1, bare 2       open + EXIF orientation + RGB + resize + centre crop + tobytes and nothing
                         else, in this process / in a spawned pool of 2 processes
    convert 1, convert 2 the image converter through the library: the same pixels plus zstd, tar
                         shards, fsync and the manifest, in this process / with 2 workers
each over the first half of the files and then all of them, --repeats times. It prints images/s
end to end (best run) and steady (the extra images over the extra time within a repeat, median:
costs paid once per run, such as starting workers, cancel out) with the ratios the targets are
about: convert 1 ≥ 0.8 × bare 1, convert 2 ≥ 1.7 × convert 1; and the machine's parallel
headroom, which bounds the 2-process rows on a shared machine. Then what the zstd level does to
the pixel payloads.
"""

import argparse
import multiprocessing
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import PIL
import zstandard
from PIL import Image, ImageOps

from common import machine, measure, report, run_convert  # bench/: this runs as a script
from pipeline.convert.image import ImageSettings, build_image_converter


def make_jpegs(root: Path, count: int, seed: int = 0) -> int:
    """ImageNet-like photos: smooth colour fields, a few shapes, sensor-like noise. Returns bytes."""
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        smooth = coarse.resize((500, 375), Image.Resampling.BICUBIC)
        pixels = np.asarray(smooth, dtype=np.int16)  # (375, 500, 3)
        for _ in range(4):
            y, x = rng.integers(0, 300), rng.integers(0, 400)
            pixels[y: y + rng.integers(20, 75), x: x + rng.integers(20, 100)] = rng.integers(0, 256, 3)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        path = root / f"n{i % 10:08d}" / f"img_{i:05d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        total += path.stat().st_size
    return total


def bare_pixels(path: Path, size: int = 64) -> bytes:
    """The library work alone, written with plain Pillow calls."""
    with Image.open(path) as image:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size)).tobytes()


def run_bare(files: list[Path], processes: int, size: int = 64) -> list[bytes]:
    if processes == 1:
        return [bare_pixels(f, size) for f in files]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.starmap(bare_pixels, [(f, size) for f in files], chunksize=16)


def compression_table(pixels: list[bytes]) -> list[tuple[str, float, float]]:
    """(level, stored/raw, MiB/s of raw input) for each zstd level over the payloads one by one."""
    raw = sum(map(len, pixels))
    rows = []
    for level in (1, 3, 9, 19):
        compressor = zstandard.ZstdCompressor(level=level)
        start = time.perf_counter()
        stored = sum(len(compressor.compress(p)) for p in pixels)
        rows.append((f"zstd {level}", stored / raw, raw / (time.perf_counter() - start) / 2**20))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="how many JPEGs (default: 1000)")
    parser.add_argument("--size", type=int, default=64, help="S of the stored images (default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="how many times to run each measurement (default: 3)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure

    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        src, out = Path(tmp) / "train", Path(tmp) / "out"
        source_bytes = make_jpegs(src, args.images)
        converter, files, _ = build_image_converter([str(src)], ImageSettings(args.size))
        times, counts = measure(partial(run_bare, size=args.size), converter, files, out, args.repeats)
        stored = {compression: run_convert(converter, files, out, 1, compression)
                  for compression in ("zstd", "none")}
        pixels = run_bare(files, 1, args.size)

    print(f"machine: {machine(f'Pillow {PIL.__version__}')}; load average before: {load_before:.2f}, "
          f"after: {os.getloadavg()[0]:.2f}")
    print(f"input:   {args.images} JPEGs 500×375, {source_bytes / args.images / 1024:.0f} KiB average "
          f"→ {args.size}×{args.size} RGB, crop; runs of {counts[0]} and {counts[1]}, {args.repeats} repeats")
    report(times, counts, "images/s")
    raw = len(pixels) * args.size * args.size * 3
    print(f"\nshards / raw pixel bytes (tar headers and padding included): zstd 3 "
          f"{stored['zstd'] / raw:.3f}, --compression none {stored['none'] / raw:.3f}")
    print(f"{'payload compression':22}{'stored/raw':>12}  MiB/s")
    for name, ratio, speed in compression_table(pixels):
        print(f"{name:22}{ratio:>12.3f}  {speed:.0f}")


if __name__ == "__main__":
    main()
