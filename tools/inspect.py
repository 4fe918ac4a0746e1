"""Look inside converted datasets: list shards, byte statistics, full verification, one sample.

Every function takes a list of paths: dataset directories (read through their index.json) and/or
single shard files (read directly; no manifest to check them against). Shards are read through
pipeline.format.reader alone, and payloads in pieces: no sample is held whole, whatever its
metadata claims.
"""

from dataclasses import dataclass

import numpy as np

from pipeline.format import storage
from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import file_sha256
from pipeline.format.manifest import sample_bound
from pipeline.format.member_index import read_member_index, scan_index
from pipeline.format.reader import (check_shard, dataset_shards, has_checksum, iter_members, iter_metas,
                                    iter_sample_members, read_chunks, read_meta)


def list_shards(paths) -> list[dict]:
    """One row per shard: name, samples, payload bytes, file bytes (from the manifest if any)."""
    rows = []
    for path in paths:
        for shard, info in dataset_shards(path):
            rows.append(dict(vars(info), dataset=str(path)) if info is not None else bare_shard_row(shard))
    return rows


def bare_shard_row(shard) -> dict:
    """A shard without a manifest: its samples and payload bytes counted from the metadata."""
    samples = payload = 0
    for _, meta in iter_metas(shard):
        samples += 1
        payload += meta["length"]
    return {"dataset": "", "name": str(shard), "samples": samples, "payload_bytes": payload,
            "file_bytes": storage.stat(shard).size, "sha256": file_sha256(shard)}


def count_samples(paths) -> int:
    """How many samples the datasets hold: from their manifests, or counted in shard files."""
    total = 0
    for path in paths:
        for shard, info in dataset_shards(path):
            total += info.samples if info is not None else sum(1 for _ in iter_metas(shard))
    return total


@dataclass
class Verified:
    samples: int  # samples read
    problems: list[str]  # one line each, naming the shard and, where there is one, the key
    unchecked: int  # samples of shards without a manifest whose member carries no checksum


def verify(paths) -> Verified:
    """Check every shard (size and sha256 against the manifest) and every member (decodes to its
    recorded length, checksums where the zstd frame has one; keys unique)."""
    result = Verified(0, [], 0)
    for path in paths:
        seen_keys = {}  # keys are unique within one dataset
        for shard, info in dataset_shards(path):
            if info is not None:
                try:
                    check_shard(shard, info)
                    check_member_index(shard, info)
                except DataError as error:
                    result.problems.append(str(error))
                    if not storage.exists(shard):
                        continue
            verify_members(shard, info, seen_keys, result)
    return result


def check_member_index(shard, info) -> None:
    """A v3 shard's member index must match its manifest entry and its shard's members."""
    if info.index_sha256 is None:
        return
    if not np.array_equal(read_member_index(shard, info), scan_index(shard, sample_bound(info))):
        raise DataError(f"{shard}: its member index does not match its members")


def verify_members(shard, info, seen_keys: dict, result: Verified) -> None:
    """Decode every sample of one shard, in pieces, adding what is wrong to `result`."""
    samples = payload = 0
    bound = None if info is None else sample_bound(info)
    try:
        for _, key, members in iter_members(shard):
            meta = read_meta(shard, key, members, bound)
            payload += sum(len(chunk) for chunk in read_chunks(shard, key, members, meta["length"]))
            samples += 1
            result.unchecked += info is None and not has_checksum(members)
            if key in seen_keys:
                result.problems.append(f"{shard}: {key}: duplicate key (also in {seen_keys[key]})")
            seen_keys[key] = storage.basename(shard)
    except DataError as error:
        result.problems.append(str(error))
        result.samples += samples
        return
    result.samples += samples
    if info is not None and (samples, payload) != (info.samples, info.payload_bytes):
        result.problems.append(f"{shard}: {samples} samples / {payload} payload bytes, manifest "
                               f"says {info.samples} / {info.payload_bytes}")


def find_sample(paths, key: str | None = None, index: int | None = None, head: int = 512):
    """(shard, key, meta, first `head` bytes, length) of the sample with this key, or at this
    position (0-based). Only that sample is decoded, in pieces."""
    for position, (shard, bound, sample_key, members) in enumerate(iter_sample_members(paths)):
        if sample_key == key or position == index:
            meta = read_meta(shard, sample_key, members, bound)
            first = bytearray()
            for chunk in read_chunks(shard, sample_key, members, meta["length"]):
                first += chunk[: max(0, head - len(first))]
            return shard, sample_key, meta, bytes(first), meta["length"]
    wanted = f"key {key}" if key is not None else f"index {index}"
    raise UsageError(f"no sample with {wanted} in {' '.join(map(str, paths))}")


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for offset in range(0, len(data), width):
        row = data[offset: offset + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset:08x}  {row.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)

