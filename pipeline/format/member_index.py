"""A shard's member index: straight to one sample, without reading the samples before it.

    NAME-000000.tar.idx ──read_member_index──▶ (samples, 3) int64: offset, member bytes, length,
          │                     checked against the manifest (sha256, samples) and every row
          │                     against the shard's size and longest sample (check_rows)
    a shard without one ──scan_index──▶ the same, made from the shard's member headers
    (offset, member bytes) ──read_members_at──▶ that one sample's (key, {extension: bytes})

An index whose sha256 was rewritten to match it is still no more than a claim: its size must be
the manifest's samples (read no further than that), its rows must lie inside the shard in stored
order, and read_members_at checks that the bytes it is given are exactly one sample's members,
with a valid key.
"""

import hashlib
import io
import os
import tarfile

import numpy as np

from pipeline.format import storage
from pipeline.format.errors import DataError
from pipeline.format.manifest import (INDEX_DTYPE, MAX_RATIO, MIN_SAMPLE_BYTES, ShardInfo, check_key,
                                      member_index_name, sample_bound)
from pipeline.format.reader import TAR_ERRORS, file_size, parse_meta, read_member, regular_members

ROW_BYTES = 3 * np.dtype(INDEX_DTYPE).itemsize  # one sample's row


def read_member_index(path, info: ShardInfo) -> np.ndarray:
    """The shard's member index, (samples, 3) int64: offset, member bytes, length; checked against
    its manifest entry (sha256, number of samples, the shard's size and longest sample: check_rows)
    before anything is allocated for it. The shard must have one (info.index_sha256)."""
    location = storage.join(os.path.dirname(os.fspath(path)), member_index_name(info.name))
    expected = info.samples * ROW_BYTES  # bounded by the manifest's file_bytes (check_counts)
    try:
        with storage.open_binary(location) as f:
            data = read_at_most(f, expected + 1)
    except OSError as error:
        raise DataError(f"{location}: cannot read the member index ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != info.index_sha256:
        raise DataError(f"{location}: sha256 does not match the manifest: the member index is "
                        "corrupt or was replaced")
    if len(data) != expected:
        rows = f"{len(data) // ROW_BYTES} samples" + (" and a part row" if len(data) % ROW_BYTES else "")
        raise DataError(f"{location}: indexes {rows}, the manifest says {info.samples}")
    index = np.frombuffer(data, dtype=INDEX_DTYPE).reshape(-1, 3)
    check_rows(location, index, info)
    return index


def read_at_most(file, limit: int) -> bytes:
    """Up to `limit` bytes of a file, read in pieces: as much memory as the file holds, whatever
    `limit` is."""
    pieces, total = [], 0
    while total < limit and (piece := file.read(min(1 << 20, limit - total))):
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def check_rows(location, index: np.ndarray, info: ShardInfo) -> None:
    """Every row as the writer makes them, inside the shard its manifest entry describes: sample
    i's members start where sample i-1's end (the first at 0), take whole 512-byte blocks (two
    headers at least) and end before the archive's two end blocks; its length is within the
    shard's longest sample and what its member bytes can hold (MAX_RATIO). Vectorised: the
    loader reads every index before its first batch. A DataError names the first bad row."""
    if not len(index):
        return
    offset, size, length = index[:, 0], index[:, 1], index[:, 2]
    # rows before the first bad one are sane, so these sums and differences stay in range there
    start = np.concatenate(([0], offset[:-1] + size[:-1]))
    end = info.file_bytes - 1024
    longest = sample_bound(info)
    bad = ((offset != start) | (size < MIN_SAMPLE_BYTES) | (size % 512 != 0) | (size > end - offset)
           | (length < 0) | (length > longest) | (length // MAX_RATIO > size))
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    at, members, stream = int(offset[row]), int(size[row]), int(length[row])
    if at != int(start[row]):
        problem = f"its members start at byte {at}, not at {int(start[row])} where the sample before ends"
    elif members < MIN_SAMPLE_BYTES or members % 512 or members > end - at:
        problem = (f"{members} member bytes at byte {at} are not whole samples inside the shard's "
                   f"{info.file_bytes} bytes")
    else:
        problem = f"length {stream} is outside 0..{min(longest, (members + 1) * MAX_RATIO - 1)}"
    raise DataError(f"{location}: sample {row}: {problem} (the member index lies)")


def scan_index(path, max_length: int | None = None) -> np.ndarray:
    """The member index of a shard, made by reading its member headers and `.json` members (for
    shards written before format v3, and to check an index against its shard)."""
    rows, key, first, end, length = [], None, 0, 0, None
    try:
        with storage.open_binary(path) as file, tarfile.open(fileobj=file, mode="r:") as tar:
            size = file_size(file)
            for info in regular_members(tar):
                member_key = info.name.partition(".")[0]
                if member_key != key:
                    if key is not None:
                        rows.append([first, end - first, length])
                    key, first, length = check_key(member_key), info.offset, None
                if info.name.endswith(".json"):
                    meta = parse_meta({"json": read_member(tar, info, size)}, max_length)
                    length = meta["length"]
                end = info.offset_data + info.size + (-info.size % 512)
    except TAR_ERRORS as error:
        raise DataError(f"{path}: broken tar after {len(rows)} samples ({error})") from None
    except DataError as error:
        raise DataError(f"{path}: sample {len(rows)}: {error}") from None
    if key is not None:
        rows.append([first, end - first, length])
    if any(row[2] is None for row in rows):
        raise DataError(f"{path}: a sample without a .json member")
    return np.array(rows, dtype=INDEX_DTYPE).reshape(-1, 3)


def read_members_at(file, offset: int, size: int) -> tuple[str, dict]:
    """(key, {extension: bytes}) of the one sample whose members take bytes offset..offset+size-1
    of an open shard file (an entry of its member index). DataError if they are not one sample."""
    if offset < 0 or size < 0:  # read_member_index refuses such rows; a seek would be an OSError
        raise DataError(f"no sample at byte {offset} ({size} bytes)")
    file.seek(offset)
    data = file.read(size)
    if len(data) != size:
        raise DataError(f"the shard ends {size - len(data)} bytes into the sample at byte {offset}")
    key, members = None, {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in regular_members(tar):
                member_key, _, extension = info.name.partition(".")
                if key is not None and member_key != key or extension in members:
                    raise DataError(f"bytes {offset}..{offset + size} are not one sample's members")
                key = check_key(member_key)
                members[extension] = read_member(tar, info, size)
    except TAR_ERRORS as error:
        raise DataError(f"broken tar at byte {offset} ({error})") from None
    if key is None:
        raise DataError(f"no sample at byte {offset}")
    return key, members
