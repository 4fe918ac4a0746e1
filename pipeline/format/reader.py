"""Reading shards back: the one reader of the format, for the loader and for inspection alike.

    shard file ──check_shard──▶ size, and sha256, as in its manifest entry
      ──iter_members──▶ (index, key, {extension: member bytes}) for samples start..stop-1: a sample
      │                 is the run of consecutive members whose names share the key (up to the
      │                 first dot; a key that breaks the format's rules is an error); members of
      │                 samples before `start`, or not ending in `suffix`, are passed over unread
      ──parse_meta──▶ the `.json` member: metadata whose `length` is an int within a bound
      ──decode_payload──▶ the byte stream from the member PAYLOAD_NAMES names, exactly `length`
      │                   bytes: decompression never produces more (a zstd bomb is an error), and
      │                   a frame with a checksum is checked
      ──payload_chunks──▶ the same in pieces, for readers that need not hold a sample whole
    (pipeline.format.member_index reads one sample at its offset instead)
    read_meta, read_chunks, read_sample: the same for one sample, errors naming it;
    iter_shard: over a whole shard → (key, meta, bytes); iter_metas: the metadata alone;
    iter_sample_members, iter_samples: every sample of datasets, bounded by their manifests

Errors are DataError. iter_shard stops at the first one, naming the shard and key; a caller with
its own error policy (pipeline.load.reading) calls the stages one by one and names errors with
sample_error. What a sample may hold is bounded before anything is allocated for it: a member by
the size of its file (read_member), a byte stream by its metadata length, itself bounded by its
manifest entry (pipeline.format.manifest.sample_bound).
"""

import functools
import io
import json
import os
import tarfile
from pathlib import Path

import zstandard

from pipeline.format import storage
from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import file_sha256
from pipeline.format.manifest import PAYLOAD_NAMES, ShardInfo, check_key, load_manifest, sample_bound

# what reading a damaged archive raises: tarfile's errors, the file's read errors, ValueError
# from a malformed pax header field, OverflowError from a seek past any size
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, OverflowError)

CHUNK_BYTES = 1 << 20  # decompressed bytes per piece of a streamed payload
_decompressors: dict[int, zstandard.ZstdDecompressor] = {}  # pid → decompressor (not picklable)


# ---------------------------------------------------------------------------------------------
# shards and their manifest entries


def dataset_shards(path) -> list[tuple[str, ShardInfo | None]]:
    """A dataset directory → (shard location, manifest entry) in manifest order; a shard file →
    itself, without an entry. A URL is a shard file when it ends in .tar, else a dataset."""
    if storage.is_url(path) and not path.endswith(".tar") or Path(path).is_dir():
        return [(storage.join(path, info.name), info) for info in load_manifest(path).shards]
    if storage.is_url(path) or Path(path).is_file():
        return [(path, None)]
    raise UsageError(f"{path}: no such dataset directory or shard")


def unreadable(path, error: OSError) -> DataError:
    return DataError(f"{path}: cannot read the shard ({error.strerror or 'no such file'})")


@functools.lru_cache(maxsize=None)
def _cached_sha256(path: str, size: int, version: str) -> str:
    return file_sha256(path)


def check_shard(path, info: ShardInfo, *, sha256: bool = True, cached: bool = False) -> None:
    """The shard file must have its manifest entry's size and, with sha256, its sha256.

    cached: hash a file (same location, size and version) once per process, for a caller that
    checks the same shards again and again (the loader, every epoch)."""
    try:
        stat = storage.stat(path)
    except OSError as error:
        raise unreadable(path, error) from None
    if stat.size != info.file_bytes:
        raise DataError(f"{path}: file is {stat.size} bytes, the manifest says "
                        f"{info.file_bytes} (truncated or replaced)")
    if not sha256:
        return
    digest = _cached_sha256(str(path), stat.size, stat.version) if cached else file_sha256(path)
    if digest != info.sha256:
        raise DataError(f"{path}: sha256 {digest[:16]}… does not match the manifest "
                        f"({info.sha256[:16]}…): the shard is corrupt or was replaced")


# ---------------------------------------------------------------------------------------------
# tar members → samples


def regular_members(tar: tarfile.TarFile):
    """The archive's regular files, in stored order, with nothing kept of those passed."""
    while (info := tar.next()) is not None:
        tar.members = []  # tarfile would list every member: 2 per sample, 2048+ bytes per sample
        if info.size < 0:  # tarfile would step back to this header, again and again
            raise tarfile.ReadError(f"member {info.name} at byte {info.offset} claims {info.size} bytes")
        if info.isreg():
            yield info


def file_size(file) -> int:
    """The size of an open file, its position back at 0."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    return size


def read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, end: int) -> bytes:
    """A member's bytes; the size its header claims must lie inside the file (`end` bytes)
    before anything is read or allocated for it."""
    if info.size > end - info.offset_data:
        raise tarfile.ReadError(f"member {info.name} at byte {info.offset} claims {info.size} bytes; "
                                f"the archive ends at byte {end}")
    return tar.extractfile(info).read()


def archive_end_problem(file, offset: int) -> str | None:
    """What is wrong with the end of an archive that tarfile reached at `offset`, if anything.
    tarfile takes a damaged or missing header after the first one for the end of the archive:
    the end is real only where two zero blocks, and nothing but zeros, follow."""
    file.seek(offset)
    zeros = 0
    while chunk := file.read(1 << 16):
        if chunk.count(0) != len(chunk):
            return f"an unreadable member header at byte {offset}"
        zeros += len(chunk)
    return None if zeros >= 1024 else f"it ends at byte {offset + zeros} without the end-of-archive blocks"


def iter_members(path, start: int = 0, stop: int | None = None, *, suffix: str = ""):
    """Yield (index, key, {extension: bytes}) for samples start..stop-1 of a shard (stop None:
    to its end), in stored order. A shard that ends before `stop` is a DataError."""
    if stop is not None and start >= stop:
        return
    try:
        file = storage.open_binary(path)
    except OSError as error:
        raise unreadable(path, error) from None
    index, key, members, done = -1, None, None, None  # done: the key of the last sample yielded
    end = None  # what is wrong with the end of the archive, if anything
    try:
        with file, tarfile.open(fileobj=file, mode="r:") as tar:
            size = file_size(file)
            for info in regular_members(tar):
                member_key, _, extension = info.name.partition(".")
                if member_key != key:
                    if members is not None:
                        yield index, key, members
                        done = key
                    index, key = index + 1, check_key(member_key)
                    if stop is not None and index >= stop:
                        return
                    members = {} if index >= start else None
                if members is None or not info.name.endswith(suffix):
                    continue
                if extension in members:
                    raise DataError(f"member {info.name} appears twice in a row")
                members[extension] = read_member(tar, info, size)
            end = archive_end_problem(file, tar.offset)
    except storage.StorageError:
        raise  # the remote file could not be read: it names the shard and the cause
    except TAR_ERRORS as error:
        where = f"after sample {done}" if done is not None else f"before sample {start}"
        raise DataError(f"{path}: broken tar {where} ({error})") from None
    except DataError as error:  # a member name that breaks the format's rules
        raise DataError(f"{path}: {error}") from None
    if members is not None:
        yield index, key, members
    if end is not None:
        raise DataError(f"{path}: broken tar after sample {key} ({end})")
    if stop is not None and index + 1 < stop:
        raise DataError(f"{path}: ends after {index + 1} samples, {stop} expected")


# ---------------------------------------------------------------------------------------------
# a sample's members → metadata and byte stream


def sample_error(path, key: str, error: DataError) -> DataError:
    """A sample's error, naming the shard and the key."""
    return DataError(f"{path}: {key}: {error}")


def parse_meta(members: dict, max_length: int | None = None) -> dict:
    """The sample's metadata; its length must be an int in 0..max_length (when a bound is known:
    the most a sample of the shard can hold, pipeline.format.manifest.sample_bound)."""
    try:
        meta = json.loads(members["json"])
        length = meta["length"]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"no valid metadata ({type(error).__name__}: {error})") from None
    if type(length) is not int or length < 0:
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


def length_error(produced: int, length: int) -> DataError:
    if produced > length:
        return DataError(f"decompresses to more than {length} bytes")
    return DataError(f"payload is {produced} bytes, metadata says {length}")


def declared_size(data: bytes) -> int:
    """The content size the (first) zstd frame declares; -1 when it declares none."""
    try:
        return zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return -1  # not even a frame header: the decompressor will say what is wrong


def payload_chunks(members: dict, length: int):
    """The sample's byte stream in pieces of at most CHUNK_BYTES, `length` bytes in all: more or
    fewer is a DataError, raised before anything past `length` is produced (a zstd bomb is an
    error, not an out-of-memory). For readers that need not hold a whole sample at once."""
    compression, data = payload_member(members)
    if compression == "none":
        if len(data) != length:
            raise length_error(len(data), length)
        view = memoryview(data)
        for start in range(0, length, CHUNK_BYTES):
            yield view[start:start + CHUNK_BYTES]
        return
    declared = declared_size(data)
    if declared > length:  # the first frame alone holds more: refused before decompressing
        raise length_error(declared, length)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    produced = 0
    try:
        while chunk := reader.read(min(CHUNK_BYTES, length + 1 - produced)):
            produced += len(chunk)
            if produced > length:
                raise length_error(produced, length)
            yield chunk
    except zstandard.ZstdError as error:
        raise DataError(f"corrupt zstd member ({error})") from None
    if produced != length:
        raise length_error(produced, length)


def decode_payload(members: dict, length: int) -> bytes:
    """The sample's byte stream: exactly `length` bytes (its metadata length, bounded by the
    caller). The usual case, one zstd frame that declares `length`, takes one call of a
    decompressor reused in this process; anything else is read in pieces, which also says what
    is wrong."""
    compression, data = payload_member(members)
    if compression == "none" and len(data) == length:
        return data
    try:
        if compression == "zstd" and length > 0 and declared_size(data) == length:
            pid = os.getpid()
            dctx = _decompressors.get(pid) or _decompressors.setdefault(pid, zstandard.ZstdDecompressor())
            return dctx.decompress(data, max_output_size=length, allow_extra_data=False)
    except zstandard.ZstdError:
        pass  # the piecewise reader below decides and explains
    stream = bytearray()
    for chunk in payload_chunks(members, length):
        stream += chunk
    return bytes(stream)


def has_checksum(members: dict) -> bool:
    """Whether the byte-stream member checks itself: a zstd frame with a content checksum
    (written since format v2; `.bin` members and older frames have none)."""
    compression, data = payload_member(members)
    try:
        return compression == "zstd" and zstandard.get_frame_parameters(data).has_checksum
    except zstandard.ZstdError:
        return False


# ---------------------------------------------------------------------------------------------
# whole shards and datasets


def read_meta(path, key: str, members: dict, max_length: int | None = None) -> dict:
    """parse_meta, its errors naming the shard and key."""
    try:
        return parse_meta(members, max_length)
    except DataError as error:
        raise sample_error(path, key, error) from None


def read_chunks(path, key: str, members: dict, length: int):
    """payload_chunks, its errors naming the shard and key."""
    try:
        yield from payload_chunks(members, length)
    except DataError as error:
        raise sample_error(path, key, error) from None


def read_sample(path, key: str, members: dict, max_length: int | None = None) -> tuple[dict, bytes]:
    """(meta, byte stream) of one sample; errors name the shard and key."""
    meta = read_meta(path, key, members, max_length)
    try:
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
        yield key, read_meta(path, key, members, max_length)


def iter_sample_members(paths):
    """(shard path, bound, key, members) over every sample of datasets and/or shard files, in
    dataset order. bound: the most bytes a sample of that shard may hold (sample_bound of its
    manifest entry), None for a shard file read without its manifest."""
    for path in paths:
        for shard, info in dataset_shards(path):
            bound = None if info is None else sample_bound(info)
            for _, key, members in iter_members(shard):
                yield shard, bound, key, members


def iter_samples(paths):
    """(shard path, key, meta, byte stream) over every sample of datasets and/or shard files, in
    dataset order."""
    for shard, bound, key, members in iter_sample_members(paths):
        yield shard, key, *read_sample(shard, key, members, bound)
