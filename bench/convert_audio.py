"""Benchmark: `convert audio` throughput beside the bare soundfile + scipy work on the same files.

    python bench/convert_audio.py [--files 32] [--seconds 30] [--repeats 3]

Makes music-like FLAC files (44.1 kHz stereo, 16-bit) in a temporary folder, then times
    bare 1, bare 2       soundfile read (float32) + channel mean + scipy resample_poly to 16 kHz of
                         whole files and nothing else, in this process / a spawned pool of 2
    convert 1, convert 2 the audio converter through the library: the same, block by block, plus
                         PCM16 encoding, zstd, tar shards, fsync and the manifest; 1 / 2 workers
each over the first half of the files and then all of them, --repeats times, and prints seconds
of audio per second end to end and steady (see bench/convert_image.py) with the ratios of the
targets: convert 1 ≥ 0.8 × bare 1, convert 2 ≥ 1.7 × convert 1.
"""

import argparse
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
import scipy
import soundfile
from scipy.signal import resample_poly

from common import machine, measure, report  # bench/: this runs as a script
from pipeline.convert.audio import AudioConverter, AudioSettings, audio_files

RATE_IN, RATE_OUT = 44100, 16000


def make_flacs(root: Path, count: int, seconds: float, seed: int = 0) -> int:
    """Chords that change every half second, with a slow tremolo and a little noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    frames = round(seconds * RATE_IN)
    t = np.arange(frames) / RATE_IN
    total = 0
    for i in range(count):
        notes = rng.uniform(80, 2000, (int(seconds * 2) + 1, 3))[(t * 2).astype(int)]  # (frames, 3) Hz
        phase = 2 * np.pi * np.cumsum(notes, axis=0) / RATE_IN
        left = np.sin(phase).sum(axis=1) * (0.2 + 0.05 * np.sin(2 * np.pi * 0.5 * t))
        right = np.roll(left, 200) + rng.normal(0, 0.01, frames)
        path = root / f"track_{i:04d}.flac"
        soundfile.write(path, np.stack([left, right], axis=1), RATE_IN, subtype="PCM_16")  # (frames, 2)
        total += path.stat().st_size
    return total


def bare_resample(path: Path) -> int:
    """The library work alone: read, downmix, resample. Returns the output samples."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (frames, 2)
    mono = (data[:, 0] + data[:, 1]) * np.float32(0.5)  # (frames,); the fastest downmix numpy has
    return len(resample_poly(mono, RATE_OUT, rate))


def run_bare(files: list[Path], processes: int) -> None:
    if processes == 1:
        for f in files:
            bare_resample(f)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(bare_resample, files, chunksize=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32, help="how many files (default: 32)")
    parser.add_argument("--seconds", type=float, default=30, help="length of each file (default: 30)")
    parser.add_argument("--repeats", type=int, default=3, help="how many times to run each measurement (default: 3)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure

    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        source_bytes = make_flacs(src, args.files, args.seconds)
        files = audio_files([str(src)])
        times, counts = measure(run_bare, AudioConverter(AudioSettings(RATE_OUT)), files, out, args.repeats)

    versions = (f"soundfile {soundfile.__version__}", f"libsndfile {soundfile.__libsndfile_version__}",
                f"scipy {scipy.__version__}")
    print(f"machine: {machine(*versions)}; load average before: "
          f"{load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(f"input:   {args.files} FLAC files × {args.seconds:g} s, 44.1 kHz stereo 16-bit "
          f"({source_bytes / 2**20:.0f} MiB) → 16 kHz mono PCM16; runs of {counts[0]} and {counts[1]} "
          f"files, {args.repeats} repeats")
    report(times, counts, "audio s/s", scale=args.seconds)


if __name__ == "__main__":
    main()
