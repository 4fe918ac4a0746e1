"""A shard's member index: straight to one sample, without reading the samples before it.

    NAME-000000.tar.idx ──read_member_index──▶ (samples, 3) int64: offset, member bytes, length,
          │                                    checked against the manifest (sha256, samples)
    a shard without one ──scan_index──▶ the same, made from the shard's member headers
    (offset, member bytes) ──read_members_at──▶ that one sample's (key, {extension: bytes})

An index row is only trusted as far as its sha256 goes: read_members_at checks that the bytes
it is given are exactly one sample's members, with a valid key.
"""

import hashlib
import io
import os
import tarfile

import numpy as np

from pipeline.format import storage
from pipeline.format.errors import DataError
from pipeline.format.manifest import INDEX_DTYPE, ShardInfo, check_key, member_index_name
from pipeline.format.reader import TAR_ERRORS, parse_meta, regular_members


def read_member_index(path, info: ShardInfo) -> np.ndarray:
    """The shard's member index, (samples, 3) int64: offset, member bytes, length; checked against
    its manifest entry (sha256 and number of samples). The shard must have one (info.index_sha256)."""
    location = storage.join(os.path.dirname(os.fspath(path)), member_index_name(info.name))
    try:
        with storage.open_binary(location) as f:
            data = f.read(info.samples * 24 + 1)
    except OSError as error:
        raise DataError(f"{location}: cannot read the member index ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != info.index_sha256:
        raise DataError(f"{location}: sha256 does not match the manifest: the member index is "
                        "corrupt or was replaced")
    index = np.frombuffer(data, dtype=INDEX_DTYPE).reshape(-1, 3)
    if len(index) != info.samples:
        raise DataError(f"{location}: indexes {len(index)} samples, the manifest says {info.samples}")
    return index


def scan_index(path, max_length: int | None = None) -> np.ndarray:
    """The member index of a shard, made by reading its member headers and `.json` members (for
    shards written before format v3, and to check an index against its shard)."""
    rows, key, first, end, length = [], None, 0, 0, None
    try:
        with storage.open_binary(path) as file, tarfile.open(fileobj=file, mode="r:") as tar:
            for info in regular_members(tar):
                member_key = info.name.partition(".")[0]
                if member_key != key:
                    if key is not None:
                        rows.append([first, end - first, length])
                    key, first, length = check_key(member_key), info.offset, None
                if info.name.endswith(".json"):
                    meta = parse_meta({"json": tar.extractfile(info).read()}, max_length)
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
                members[extension] = tar.extractfile(info).read()
    except TAR_ERRORS as error:
        raise DataError(f"broken tar at byte {offset} ({error})") from None
    if key is None:
        raise DataError(f"no sample at byte {offset}")
    return key, members
