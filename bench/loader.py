"""Loader throughput beside the bare cost of reading the same tars and decompressing their members.

Synthetic data, made once in a temporary folder: text (Zipf-distributed pseudo-words, through the
real text converter), 52×52 RGB images (8112 bytes, one per 8192-id sequence) and 16-bit PCM
audio clips of 1–8 s. Every measurement runs in a fresh subprocess (own peak RSS), files already
in the page cache:

  bare       webdataset tar reading + JSON + zstd decompression of every member, nothing else,
             in k processes that split the shards (k = max(1, workers) to match the loader),
             timed inside them (process start-up left out)
  loader     build_train_loader (T = 8192, the global order: samples read at their member-index
             offsets in a fresh permutation each epoch, pieces of 8 sequences, batches of
             int64 ids), workers 0 / 1 / 2, timed from its first batch (start-up left out) to
             one epoch's worth of bytes
  floor      a plain torch DataLoader handing over ready-made fetches in the loader's form (8
             batches of uint8 rows at a time) from 1 worker, and the main process turning them
             into int64 ids: what passing batches between processes alone costs on this machine
  RSS        peak RSS of the loader's process (and of its largest worker) for the text dataset
             and for one with 4× the shards (flat: memory does not grow with the dataset)

    python bench/loader.py [--mib 128] [--workers 0,1,2] [--batch-size 8]
"""

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import zstandard
from webdataset.tariterators import group_by_keys, tar_file_expander

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402  (bench/: this runs as a script)
from pipeline.convert.driver import ConvertOptions, convert  # noqa: E402
from pipeline.load.packing import decode_rows, encode_rows, keep  # noqa: E402
from pipeline.format.manifest import Manifest, load_manifest, shard_name  # noqa: E402
from pipeline.format.shards import ShardWriter  # noqa: E402
from pipeline.convert.text import TextConverter  # noqa: E402

SEQ_LEN, PATCH = 8192, 8
FETCH = 8  # LoaderConfig.batches_per_fetch, the default
SHARD_BYTES = 4 << 20
IMAGE_SIDE = 52  # 52·52·3 = 8112 bytes: one image per 8192-id sequence


# ---------------------------------------------------------------------------------------------
# data


def make_text(folder: Path, payload: int, seed: int, shard_bytes: int = SHARD_BYTES) -> Path:
    """JSONL of pseudo-word documents (Zipf word frequencies, 1–64 KiB), then the converter."""
    rng = np.random.default_rng(seed)
    words = [bytes(rng.integers(97, 123, rng.integers(2, 10), dtype=np.uint8)) for _ in range(20000)]
    source, written = folder / f"text-{seed}.jsonl", 0
    with open(source, "w") as f:
        while written < payload:
            picks = np.minimum(rng.zipf(1.3, int(rng.integers(200, 10000))), len(words)) - 1
            doc = b" ".join(words[i] for i in picks).decode()
            f.write(json.dumps({"text": doc}) + "\n")
            written += len(doc)
    out = folder / f"text-{seed}"
    convert(TextConverter(), [source], ConvertOptions(out=out, name="text", shard_bytes=shard_bytes,
                                                      progress=False), {"bench": seed})
    return out


def write_dataset(out: Path, modality: str, samples) -> Path:
    """(payload, meta) samples → zstd shards of about SHARD_BYTES, and the manifest."""
    out.mkdir()
    manifest = Manifest(out.name, modality, {"bench": modality})
    writer, cctx = None, zstandard.ZstdCompressor()
    for number, (payload, meta) in enumerate(samples):
        writer = writer or ShardWriter(out / shard_name(out.name, len(manifest.shards)))
        meta.update(modality=modality, source=f"synthetic/{number}", length=len(payload))
        writer.add(f"{number:09d}", "zstd", cctx.compress(payload), len(payload), meta)
        if writer.file_bytes >= SHARD_BYTES:
            manifest.shards.append(writer.close())
            writer = None
    if writer:
        manifest.shards.append(writer.close())
    manifest.save(out)
    return out


def images(payload: int, rng):
    """Smooth 52×52 pictures (upsampled 13×13 noise plus grain): compressible like photos, a bit."""
    for _ in range(payload // (IMAGE_SIDE * IMAGE_SIDE * 3)):
        coarse = rng.integers(0, 256, (13, 13, 3)).repeat(4, 0).repeat(4, 1)
        yield (np.clip(coarse + rng.integers(-8, 9, coarse.shape), 0, 255).astype(np.uint8).tobytes(),
               {"height": IMAGE_SIDE, "width": IMAGE_SIDE, "channels": 3, "label": 0})


def clips(payload: int, rng):
    """Mono 16 kHz pcm16: a few sines plus noise, 1–8 s each."""
    made = 0
    while made < payload:
        t = np.arange(int(rng.integers(16000, 128000))) / 16000
        wave = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(3)) * 6000
        pcm = (wave + rng.normal(0, 300, len(t))).astype("<i2").tobytes()
        made += len(pcm)
        yield pcm, {"encoding": "pcm16", "sample_rate": 16000}


# ---------------------------------------------------------------------------------------------
# measurements (each in its own subprocess)


def bare_read(shards: list[str]) -> tuple[int, float]:
    """Read tars with webdataset, decompress every member: (payload bytes, seconds)."""
    dctx, total, start = zstandard.ZstdDecompressor(), 0, time.perf_counter()
    for path in shards:
        with open(path, "rb") as stream:
            for sample in group_by_keys(tar_file_expander([{"url": path, "stream": stream}])):
                length = json.loads(sample["json"])["length"]
                total += len(dctx.decompress(sample["bin.zst"], max_output_size=length))
    return total, time.perf_counter() - start


def measure_bare(dataset: str, processes: int) -> dict:
    shards = [str(Path(dataset) / s.name) for s in load_manifest(dataset).shards]
    groups = [shards[i::processes] for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = pool.map(bare_read, groups)
    return {"seconds": max(seconds for _, seconds in results), "bytes": sum(n for n, _ in results),
            "sequences": 0}


def measure_loader(dataset: str, workers: int, batch_size: int) -> dict:
    from pipeline.load.loader import LoaderConfig, build_train_loader
    warnings.filterwarnings("ignore")
    payload = load_manifest(dataset).totals["payload_bytes"]
    config = LoaderConfig([dataset], seq_len=SEQ_LEN, patch_size=PATCH, micro_batch_size=batch_size,
                          num_workers=workers, batches_per_fetch=FETCH)
    batches = iter(build_train_loader(config))
    next(batches)  # workers started, first blocks read: timed from here
    start, total, sequences = time.perf_counter(), 0, 0
    while total < payload:
        ids = next(batches)["ids"].numpy()  # numpy: torch ops here would compete for threads
        total += int(np.count_nonzero(ids < 256))
        sequences += len(ids)
    return {"seconds": time.perf_counter() - start, "bytes": total, "sequences": sequences}


class ReadyFetches(torch.utils.data.IterableDataset):
    """The same fetch over and over: no reading, only the hand-over between processes."""

    def __init__(self, rows: int, count: int):
        self.rows, self.count = rows, count

    def __iter__(self):
        fetch = encode_rows([[np.zeros(SEQ_LEN, np.uint8)]] * self.rows, SEQ_LEN)
        for _ in range(self.count):
            yield {**{key: value.clone() for key, value in fetch.items()}, "modality": ["text"] * self.rows}


def measure_floor(batch_size: int, count: int = 400) -> dict:
    rows = batch_size * FETCH
    loader = torch.utils.data.DataLoader(ReadyFetches(rows, count), batch_size=None,
                                         num_workers=1, collate_fn=keep)
    start = time.perf_counter()
    for fetch in loader:
        decode_rows(fetch)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": count * rows * SEQ_LEN, "sequences": count * rows}


def run_measurement(kind: str, dataset: str, count: int, batch_size: int) -> dict:
    args = [sys.executable, __file__, "--measure", json.dumps([kind, dataset, count, batch_size])]
    result = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return result


def measurement_main(kind: str, dataset: str, count: int, batch_size: int) -> None:
    measure = {"bare": lambda: measure_bare(dataset, count), "floor": lambda: measure_floor(batch_size),
               "loader": lambda: measure_loader(dataset, count, batch_size)}[kind]
    result = measure()
    result["rss_main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_child"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=128, help="payload MiB per modality (default: 128)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader workers to try (default: 0,1,2)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default: 8)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measurement_main(*json.loads(args.measure))
    payload, workers = int(args.mib * (1 << 20)), [int(w) for w in args.workers.split(",")]
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        tmp, rng = Path(tmp), np.random.default_rng(0)
        data = {"text": make_text(tmp, payload, seed=1),
                "image": write_dataset(tmp / "image", "image", images(payload, rng)),
                "audio": write_dataset(tmp / "audio", "audio", clips(payload, rng))}
        rows = []
        for modality, dataset in data.items():
            for count in workers:
                bare = run_measurement("bare", str(dataset), max(1, count), args.batch_size)
                loader = run_measurement("loader", str(dataset), count, args.batch_size)
                rows.append((modality, count, loader, bare))
        few = make_text(tmp, payload // 4, seed=2, shard_bytes=SHARD_BYTES // 4)
        many = make_text(tmp, payload, seed=3, shard_bytes=SHARD_BYTES // 4)
        rss = {name: run_measurement("loader", str(d), 0, args.batch_size)
               for name, d in [("few", few), ("many", many)]}
        shards = {name: load_manifest(d).totals["shards"] for name, d in
                  [*data.items(), ("few", few), ("many", many)]}
        floor = run_measurement("floor", "", 1, args.batch_size)

    print(f"machine: {machine(f'zstandard {zstandard.__version__}')}, load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end (other processes share the cores)")
    print(f"data: {args.mib:g} MiB payload per modality in {SHARD_BYTES >> 20} MiB shards "
          f"({', '.join(f'{m} {shards[m]}' for m in data)} shards); "
          f"T = {SEQ_LEN}, B = {args.batch_size}, global order (samples read at their offsets)\n")
    print(f"{'modality':<9}{'workers':>8}{'seq/s':>9}{'MB/s':>8}{'bare MB/s':>11}{'ratio':>7}"
          f"{'RSS main':>10}{'RSS worker':>12}")
    for modality, count, loader, bare in rows:
        speed = loader["bytes"] / loader["seconds"] / 1e6
        bare_speed = bare["bytes"] / bare["seconds"] / 1e6
        worker_rss = f"{loader['rss_child']:.0f} MiB" if count else "-"
        print(f"{modality:<9}{count:>8}{loader['sequences'] / loader['seconds']:>9.0f}{speed:>8.0f}"
              f"{bare_speed:>8.0f} ({max(1, count)}p){speed / bare_speed:>5.2f}"
              f"{loader['rss_main']:>6.0f} MiB{worker_rss:>12}")
    print("\nbare: k processes reading the shards split k ways (kp). ratio: loader / bare (target >= 0.8)")
    print(f"floor: a torch DataLoader hands over {floor['sequences'] / floor['seconds']:.0f} ready-made "
          f"sequences/s ({floor['bytes'] / floor['seconds'] / 1e6:.0f} MB/s) from 1 worker, reading nothing")
    print(f"peak RSS, text in {SHARD_BYTES // 4 >> 10} KiB shards, workers 0: "
          f"{rss['few']['rss_main']:.0f} MiB with {shards['few']} shards, "
          f"{rss['many']['rss_main']:.0f} MiB with {shards['many']} shards "
          f"(ratio {rss['many']['rss_main'] / rss['few']['rss_main']:.2f}, target ~1.0)")


if __name__ == "__main__":
    main()
