"""Look inside converted datasets: list shards, byte statistics, full verification, one sample.

Every function takes a list of paths: dataset directories (read through their index.json) and/or
single shard files (read directly; no manifest to check them against). Shards are read through
pipeline.format.reader alone.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.format.errors import DataError, UsageError
from pipeline.format.reader import (check_shard, dataset_shards, file_sha256, iter_metas, iter_samples,
                                    iter_shard)


def list_shards(paths) -> list[dict]:
    """One row per shard: name, samples, payload bytes, file bytes (from the manifest if any)."""
    rows = []
    for path in paths:
        for shard, info in dataset_shards(path):
            rows.append(dict(vars(info), dataset=str(path)) if info is not None else bare_shard_row(shard))
    return rows


def bare_shard_row(shard: Path) -> dict:
    """A shard without a manifest: its samples and payload bytes counted from the metadata."""
    samples = payload = 0
    for _, meta in iter_metas(shard):
        samples += 1
        payload += meta["length"]
    return {"dataset": "", "name": str(shard), "samples": samples, "payload_bytes": payload,
            "file_bytes": shard.stat().st_size, "sha256": file_sha256(shard)}


@dataclass
class Stats:
    samples: int
    payload_bytes: int
    lengths: np.ndarray  # (samples,) byte-stream length of each sample
    histogram: np.ndarray  # (256,) count of each byte value
    modalities: dict

    @property
    def entropy_bits(self) -> float:
        """Unigram entropy of the bytes, in bits per byte."""
        p = self.histogram[self.histogram > 0] / max(self.histogram.sum(), 1)
        return float(-(p * np.log2(p)).sum())

    def length_percentiles(self) -> dict:
        if not self.samples:
            return {}
        q = np.percentile(self.lengths, [0, 10, 50, 90, 99, 100])
        return dict(zip(["min", "p10", "p50", "p90", "p99", "max"], q.astype(int).tolist()))


def dataset_stats(paths, max_samples: int | None = None) -> Stats:
    histogram = np.zeros(256, dtype=np.int64)
    lengths, modalities = [], {}
    for _, _, meta, payload in iter_samples(paths):
        if max_samples is not None and len(lengths) >= max_samples:
            break
        histogram += np.bincount(np.frombuffer(payload, dtype=np.uint8), minlength=256)
        lengths.append(len(payload))
        modality = meta.get("modality", "?")
        modalities[modality] = modalities.get(modality, 0) + 1
    lengths = np.array(lengths, dtype=np.int64)
    return Stats(len(lengths), int(lengths.sum()), lengths, histogram, modalities)


def verify(paths) -> tuple[int, list[str]]:
    """Check every shard (size and sha256 against the manifest) and every member (decodes to its
    recorded length; keys unique). Returns (samples checked, problems), each problem one line
    naming the shard and, where there is one, the key."""
    problems, checked = [], 0
    for path in paths:
        seen_keys = {}  # keys are unique within one dataset
        for shard, info in dataset_shards(path):
            if info is not None:
                try:
                    check_shard(shard, info)
                except DataError as error:
                    problems.append(str(error))
                    if not shard.is_file():
                        continue
            checked += verify_members(shard, info, seen_keys, problems)
    return checked, problems


def verify_members(shard: Path, info, seen_keys: dict, problems: list[str]) -> int:
    """Decode every sample of one shard, adding what is wrong to `problems`; returns the samples
    read."""
    samples = payload = 0
    try:
        for key, _, stream in iter_shard(shard):
            samples += 1
            payload += len(stream)
            if key in seen_keys:
                problems.append(f"{shard}: {key}: duplicate key (also in {seen_keys[key]})")
            seen_keys[key] = shard.name
    except DataError as error:
        problems.append(str(error))
        return samples
    if info is not None and (samples, payload) != (info.samples, info.payload_bytes):
        problems.append(f"{shard}: {samples} samples / {payload} payload bytes, manifest "
                        f"says {info.samples} / {info.payload_bytes}")
    return samples


def find_sample(paths, key: str | None = None, index: int | None = None):
    """(shard, key, meta, payload) of the sample with this key, or at this position (0-based)."""
    for position, (shard, sample_key, meta, payload) in enumerate(iter_samples(paths)):
        if sample_key == key or position == index:
            return shard, sample_key, meta, payload
    wanted = f"key {key}" if key is not None else f"index {index}"
    raise UsageError(f"no sample with {wanted} in {' '.join(map(str, paths))}")


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for offset in range(0, len(data), width):
        row = data[offset: offset + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset:08x}  {row.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)

