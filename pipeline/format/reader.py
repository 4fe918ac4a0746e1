"""Reading shards back: the one reader of the format, for the loader and for inspection alike.

    shard file ──check_shard──▶ size, and sha256, as in its manifest entry
      ──iter_members──▶ (index, key, {extension: member bytes}) for samples start..stop-1: a sample
      │                 is the run of consecutive members whose names share the key (up to the
      │                 first dot); members of samples before `start`, or not ending in `suffix`,
      │                 are passed over unread
      ──parse_meta──▶ the `.json` member: metadata whose `length` is an int within a bound
      ──decode_payload──▶ the byte stream from the member PAYLOAD_NAMES names, exactly `length`
                          bytes: decompression never produces more (a zstd bomb is an error)
    read_sample: the two for one sample; iter_shard: over a whole shard → (key, meta, bytes);
    iter_metas: the metadata alone; iter_samples: every sample of datasets

Errors are DataError. iter_shard stops at the first one, naming the shard and key; a caller with
its own error policy (pipeline.load.reading) calls the stages one by one and names errors with
sample_error.
"""

import functools
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import zstandard

from pipeline.format.errors import DataError, UsageError
from pipeline.format.shards import PAYLOAD_NAMES, ShardInfo, load_manifest

# what reading a damaged archive raises: tarfile's errors, the file's read errors, and
# ValueError from a malformed pax header field
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)

_decompressors: dict[int, zstandard.ZstdDecompressor] = {}  # pid → decompressor (not picklable)


# ---------------------------------------------------------------------------------------------
# shards and their manifest entries


def dataset_shards(path) -> list[tuple[Path, ShardInfo | None]]:
    """A dataset directory → (shard path, manifest entry) in manifest order; a shard file →
    itself, without an entry."""
    path = Path(path)
    if path.is_dir():
        return [(path / info.name, info) for info in load_manifest(path).shards]
    if path.is_file():
        return [(path, None)]
    raise UsageError(f"{path}: no such dataset directory or shard")


def unreadable(path, error: OSError) -> DataError:
    return DataError(f"{path}: cannot read the shard ({error.strerror})")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def check_shard(path, info: ShardInfo, *, sha256: bool = True, cached: bool = False) -> None:
    """The shard file must have its manifest entry's size and, with sha256, its sha256.

    cached: hash a file (same path, size and mtime) once per process, for a caller that checks
    the same shards again and again (the loader, every epoch)."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise unreadable(path, error) from None
    if stat.st_size != info.file_bytes:
        raise DataError(f"{path}: file is {stat.st_size} bytes, the manifest says "
                        f"{info.file_bytes} (truncated or replaced)")
    if not sha256:
        return
    digest = _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns) if cached else file_sha256(path)
    if digest != info.sha256:
        raise DataError(f"{path}: sha256 {digest[:16]}… does not match the manifest "
                        f"({info.sha256[:16]}…): the shard is corrupt or was replaced")


# ---------------------------------------------------------------------------------------------
# tar members → samples


def regular_members(tar: tarfile.TarFile):
    """The archive's regular files, in stored order, with nothing kept of those passed."""
    while (info := tar.next()) is not None:
        tar.members = []  # tarfile would list every member: 2 per sample, 2048+ bytes per sample
        if info.isreg():
            yield info


def iter_members(path, start: int = 0, stop: int | None = None, *, suffix: str = ""):
    """Yield (index, key, {extension: bytes}) for samples start..stop-1 of a shard (stop None:
    to its end), in stored order. A shard that ends before `stop` is a DataError."""
    path = Path(path)
    if stop is not None and start >= stop:
        return
    try:
        file = open(path, "rb")
    except OSError as error:
        raise unreadable(path, error) from None
    index, key, members, done = -1, None, None, None  # done: the key of the last sample yielded
    try:
        with file, tarfile.open(fileobj=file, mode="r:") as tar:
            for info in regular_members(tar):
                member_key, _, extension = info.name.partition(".")
                if member_key != key:
                    if members is not None:
                        yield index, key, members
                        done = key
                    index, key = index + 1, member_key
                    if stop is not None and index >= stop:
                        return
                    members = {} if index >= start else None
                if members is None or not info.name.endswith(suffix):
                    continue
                if extension in members:
                    raise DataError(f"{path}: member {info.name} appears twice in a row")
                members[extension] = tar.extractfile(info).read()
    except TAR_ERRORS as error:
        where = f"after sample {done}" if done is not None else f"before sample {start}"
        raise DataError(f"{path}: broken tar {where} ({error})") from None
    if members is not None:
        yield index, key, members
    if stop is not None and index + 1 < stop:
        raise DataError(f"{path}: ends after {index + 1} samples, {stop} expected")


# ---------------------------------------------------------------------------------------------
# a sample's members → metadata and byte stream


def sample_error(path, key: str, error: DataError) -> DataError:
    """A sample's error, naming the shard and the key."""
    return DataError(f"{path}: {key}: {error}")


def parse_meta(members: dict, max_length: int | None = None) -> dict:
    """The sample's metadata; its length must be an int in 0..max_length (when a bound is known:
    the most a sample of the shard can hold)."""
    try:
        meta = json.loads(members["json"])
        length = meta["length"]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"no valid metadata ({type(error).__name__}: {error})") from None
    if not isinstance(length, int) or length < 0:
        raise DataError(f"metadata length {length!r} is not a byte count")
    if max_length is not None and length > max_length:
        raise DataError(f"metadata length {length} is outside 0..{max_length}, the most a sample "
                        "of this shard can hold")
    return meta


def payload_member(members: dict) -> tuple[str, bytes]:
    """(compression, stored bytes) of the sample's byte-stream member."""
    for compression, name in PAYLOAD_NAMES.items():
        if name in members:
            return compression, members[name]
    raise DataError(f"no {' or '.join('.' + name for name in PAYLOAD_NAMES.values())} member")


def decompress_bounded(data: bytes, max_bytes: int) -> bytes:
    """Decompress a zstd member (any number of frames), refusing to produce more than
    `max_bytes`: a zstd bomb is an error, not an out-of-memory."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out = reader.read(max_bytes + 1)
    if len(out) > max_bytes:
        raise DataError(f"decompresses to more than {max_bytes} bytes")
    return out


def decompress_zstd(data: bytes, length: int) -> bytes:
    """At most `length` bytes out of a zstd member. The usual case, one frame that declares
    `length`, takes one call of a decompressor reused in this process; anything else goes through
    the bounded streaming reader, which also says what is wrong."""
    try:
        if length > 0 and zstandard.frame_content_size(data) <= length:
            pid = os.getpid()
            dctx = _decompressors.get(pid) or _decompressors.setdefault(pid, zstandard.ZstdDecompressor())
            stream = dctx.decompress(data, max_output_size=length)
            if len(stream) == length:
                return stream
    except zstandard.ZstdError:
        pass  # the streaming reader below decides and explains
    try:
        return decompress_bounded(data, length)
    except zstandard.ZstdError as error:
        raise DataError(f"corrupt zstd member ({error})") from None


def decode_payload(members: dict, length: int) -> bytes:
    """The sample's byte stream: exactly `length` bytes (its metadata length)."""
    compression, data = payload_member(members)
    stream = decompress_zstd(data, length) if compression == "zstd" else data
    if len(stream) != length:
        raise DataError(f"payload is {len(stream)} bytes, metadata says {length}")
    return stream


# ---------------------------------------------------------------------------------------------
# whole shards and datasets


def read_sample(path, key: str, members: dict, max_length: int | None = None) -> tuple[dict, bytes]:
    """(meta, byte stream) of one sample; errors name the shard and key."""
    try:
        meta = parse_meta(members, max_length)
        return meta, decode_payload(members, meta["length"])
    except DataError as error:
        raise sample_error(path, key, error) from None


def iter_shard(path, *, max_length: int | None = None):
    """Yield (key, meta, byte stream) for every sample of one shard, in stored order."""
    for _, key, members in iter_members(path):
        yield key, *read_sample(path, key, members, max_length)


def iter_metas(path, stop: int | None = None, *, max_length: int | None = None):
    """Yield (key, meta) for samples 0..stop-1 of one shard (stop None: all), reading only the
    `.json` members."""
    for _, key, members in iter_members(path, 0, stop, suffix=".json"):
        try:
            yield key, parse_meta(members, max_length)
        except DataError as error:
            raise sample_error(path, key, error) from None


def iter_samples(paths):
    """(shard path, key, meta, byte stream) over every sample of datasets and/or shard files, in
    dataset order."""
    for path in paths:
        for shard, _ in dataset_shards(path):
            for key, meta, payload in iter_shard(shard):
                yield shard, key, meta, payload
