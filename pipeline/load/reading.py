"""Reading part of one shard: check → webdataset tar members → samples → bytes → Tokens.

    shard ──check_shard──▶ file size and sha256 as in the manifest (sha256 once per process)
      ──iter_members──▶ webdataset tar_file_expander + group_by_keys; samples before `start`
      │                 are passed over without reading their members into memory
      ──decode_sample──▶ meta + payload, decompression bounded by the metadata length, itself
      │                 bounded by the shard's payload bytes in the manifest
      ──Transform──▶ (sample index, Tokens)                              = read_tokens

Bad data follows an ErrorPolicy: "raise" (the default) raises DataError naming the shard and the
sample key; "skip" logs each problem, counts it and drops what it spoils: the whole shard for a
failed check, the rest of the shard for a broken tar, the one sample for a bad member.
"""

import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.format.errors import DataError
from pipeline.format.shards import ShardInfo, decode_payload, file_sha256

log = logging.getLogger("megabyte.loader")

# what webdataset and tarfile raise on a broken archive (ValueError: duplicate member names)
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


@dataclass(frozen=True)
class ShardRef:
    path: Path
    info: ShardInfo


class ErrorPolicy:
    """on_error="raise": re-raise; "skip": log the problem with its shard and key, and count it."""

    def __init__(self, on_error: str):
        self.on_error = on_error
        self.count = 0

    def handle(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.count += 1
        log.warning(f"skipped bad data: {error}")


_verified: dict[tuple, str] = {}  # (path, size, mtime) → sha256, per process
_decompressors: dict[int, zstandard.ZstdDecompressor] = {}  # pid → decompressor (not picklable)


def check_shard(shard: ShardRef, verify: bool) -> None:
    """The file must have the manifest's size and, with verify, its sha256."""
    try:
        stat = os.stat(shard.path)
    except OSError as error:
        raise DataError(f"{shard.path}: cannot read the shard ({error.strerror})") from None
    if stat.st_size != shard.info.file_bytes:
        raise DataError(f"{shard.path}: file is {stat.st_size} bytes, the manifest says "
                        f"{shard.info.file_bytes} (truncated or replaced)")
    if not verify:
        return
    key = (str(shard.path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = file_sha256(shard.path)
    if _verified[key] != shard.info.sha256:
        raise DataError(f"{shard.path}: sha256 {_verified[key][:16]}… does not match the manifest "
                        f"({shard.info.sha256[:16]}…): the shard is corrupt or was replaced")


class _CountSamples:
    """select_files for webdataset: numbers samples by key as members stream past, and selects
    the members of samples from `start` on (the others are never read into memory)."""

    def __init__(self, start: int, suffix: str = ""):
        self.start = start
        self.suffix = suffix
        self.index = -1
        self.key = None

    def __call__(self, name: str) -> bool:
        key = name.split(".", 1)[0]
        if key != self.key:
            self.key = key
            self.index += 1
        return self.index >= self.start and name.endswith(self.suffix)


def iter_members(shard: ShardRef, start: int, stop: int, suffix: str = ""):
    """Yield (index, key, {extension: bytes}) for samples start..stop-1 of a shard, in order."""
    index, key = start, None
    if start >= stop:
        return
    with open(shard.path, "rb") as stream:
        files = tar_file_expander([{"url": str(shard.path), "stream": stream}],
                                  select_files=_CountSamples(start, suffix))
        try:
            for sample in group_by_keys(files):
                key = sample["__key__"]
                yield index, key, sample
                index += 1
                if index >= stop:
                    return
        except TAR_ERRORS as error:
            where = f"after sample {key}" if key else f"before sample {index}"
            reason = str(error.args[0]).split(" @ ")[0] if error.args else type(error).__name__
            raise DataError(f"{shard.path}: broken tar {where} ({reason})") from None
    if index < stop:
        raise DataError(f"{shard.path}: ends after {index} samples, the manifest says {shard.info.samples}")


def parse_meta(members: dict, payload_bytes: int) -> dict:
    """The sample's metadata; its length must be within the shard's payload bytes."""
    try:
        meta = json.loads(members["json"])
        length = meta["length"]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"no valid metadata ({type(error).__name__}: {error})") from None
    if not isinstance(length, int) or not 0 <= length <= payload_bytes:
        raise DataError(f"metadata length {length!r} is outside 0..{payload_bytes}, the shard's "
                        "payload bytes in the manifest")
    return meta


def decode_sample(members: dict, length: int) -> bytes:
    """The sample's byte stream, never longer than its metadata length."""
    name = "bin.zst" if "bin.zst" in members else "bin" if "bin" in members else None
    if name is None:
        raise DataError("no .bin.zst or .bin member")
    data = members[name]
    if name == "bin.zst" and length > 0:
        # fast path: one reused decompressor, output bounded by the declared or the meta length
        try:
            if zstandard.frame_content_size(data) <= length:
                pid = os.getpid()
                dctx = _decompressors.get(pid) or _decompressors.setdefault(pid, zstandard.ZstdDecompressor())
                stream = dctx.decompress(data, max_output_size=length)
                if len(stream) == length:
                    return stream
        except zstandard.ZstdError:
            pass  # the bounded streaming decoder below says what is wrong
    # several frames, or something wrong: the foundation's reader decides and explains
    return decode_payload(name, data, {"length": length})


def sample_tokens(shard: ShardRef, key: str, members: dict, transform, policy: ErrorPolicy,
                  keep_places: bool):
    """One sample's Tokens; None when it is bad and skipped, or with keep_places, PAD ids of its
    length in its place (when its metadata can still say that length)."""
    meta = None
    try:
        meta = parse_meta(members, shard.info.payload_bytes)
        return transform(meta, decode_sample(members, meta["length"]))
    except DataError as error:
        policy.handle(DataError(f"{shard.path}: {key}: {error}"))
    try:
        return transform(meta, None) if keep_places and meta is not None else None
    except DataError:
        return None


def read_tokens(shard: ShardRef, start: int, stop: int, transform, *, verify: bool,
                policy: ErrorPolicy, keep_places: bool = False):
    """Yield (sample index, Tokens) for samples start..stop-1 of a shard; bad data per `policy`.

    keep_places: a sample whose payload is bad still yields, as PAD ids of its length (validation
    keeps every sample's place so that the ranks' shares never shift).
    """
    try:
        check_shard(shard, verify)
    except DataError as error:
        policy.handle(error)
        return
    members = iter_members(shard, start, stop)
    while True:
        try:
            item = next(members, None)
        except DataError as error:
            policy.handle(error)
            return
        if item is None:
            return
        index, key, sample = item
        tokens = sample_tokens(shard, key, sample, transform, policy, keep_places)
        if tokens is not None:
            yield index, tokens


def scan_metas(shard: ShardRef) -> list[dict]:
    """Every sample's metadata, reading only the .json members (for layouts that need lengths)."""
    metas = []
    for _, key, sample in iter_members(shard, 0, shard.info.samples, suffix=".json"):
        try:
            metas.append(parse_meta(sample, shard.info.payload_bytes))
        except DataError as error:
            raise DataError(f"{shard.path}: {key}: {error}") from None
    return metas
