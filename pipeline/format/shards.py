"""Shard format v3: deterministic, atomic WebDataset tars plus an `index.json` manifest.

    DIR/
      NAME-000000.tar      <key>.bin.zst  the byte stream (zstd; `.bin` when uncompressed)
                           <key>.json     metadata: modality, source, length, modality fields
      NAME-000000.tar.idx  the shard's member index (v3)
      NAME-000001.tar
      NAME-000001.tar.idx
      ...
      index.json           written last: format, version, modality, arguments, shards, totals, skipped

This module is the writer and the manifest; pipeline.format.reader reads shards back. A shard's
bytes depend only on its samples: members are written in a fixed order with mtime 0, owner 0/0,
mode 0644 and plain ustar headers (no pax headers carrying times), so a re-run gives
byte-identical files and sha256. A shard is written under a temporary name, fsynced and renamed,
so a file under a final name is always complete.

v2 over v1: zstd frames carry their content size and a checksum (payload_compressor), so a member
verifies without the manifest; each shard entry records `max_sample_bytes`, the longest sample,
which bounds what a reader allocates. v1 datasets stay readable (their bound is the shard's
payload bytes).

v3 over v2: each shard has a member index, `NAME-000000.tar.idx`: per sample, in stored order,
three little-endian int64 (INDEX_DTYPE): the byte offset of its first member's header, the bytes
its members take (headers and padding included) and its byte-stream length. A reader seeks
straight to any sample with it (the loader reads only its own samples). The manifest entry
records the index's sha256; the index is published before its shard, so a shard under its final
name always has its index. v1 and v2 datasets have none (pipeline.format.reader.scan_index
builds it by reading the shard's headers).

Names read back from a shard or a manifest become file names (render, merge), so they follow
fixed patterns, checked where they are read: keys KEY_PATTERN, shard files SHARD_PATTERN.
"""

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from pipeline.format import storage
from pipeline.format.errors import DataError, UsageError

FORMAT_NAME = "megabyte-shards"
FORMAT_VERSION = 3
INDEX_NAME = "index.json"
MEMBER_INDEX_SUFFIX = ".idx"  # a shard's member index: its file name plus this
INDEX_DTYPE = "<i8"  # (samples, 3): offset, member bytes, byte-stream length
# compression → extension of a sample's byte-stream member; readers try them in this order
PAYLOAD_NAMES = {"zstd": "bin.zst", "none": "bin"}
# a key: letters, digits, "_" and "-" (no dot: webdataset splits a member name at its first dot;
# no separator or "..": keys name rendered files); at most 90 bytes, so that every member name
# fits a ustar header's 100
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,90}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")  # a dataset name: NAME of NAME-000000.tar
SHARD_PATTERN = re.compile(rf"(?!.*\.\.)({NAME_PATTERN.pattern})-[0-9]{{6,}}\.tar")


# ---------------------------------------------------------------------------------------------
# files: atomic writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to `path` atomically (write_bytes_atomic)."""
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


class HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, f):
        self.f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


# ---------------------------------------------------------------------------------------------
# names


def check_key(key) -> str:
    """A sample key, as the writer takes it and the reader accepts it (see KEY_PATTERN)."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise DataError(f"invalid sample key {key!r}: keys are 1-90 letters, digits, '_' or '-' "
                        "(no dot, no path)")
    return key


def check_name(name) -> str:
    """A dataset name: NAME in NAME-000000.tar."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UsageError(f"invalid dataset name {name!r}: use 1-80 letters, digits, '_', '-' or "
                         "'.' (not first, no '..')")
    return name


def check_shard_name(name) -> str:
    """A shard file name from a manifest: NAME-NNNNNN.tar, nothing that could leave the directory."""
    if not isinstance(name, str) or not SHARD_PATTERN.fullmatch(name):
        raise ValueError(f"shard name {name!r} is not NAME-NNNNNN.tar")
    return name


# ---------------------------------------------------------------------------------------------
# manifest


@dataclass
class ShardInfo:
    name: str
    samples: int
    payload_bytes: int  # uncompressed byte-stream bytes of all samples
    file_bytes: int  # size of the tar file
    sha256: str
    max_sample_bytes: int | None = None  # the longest sample's byte stream; None: written by v1
    index_sha256: str | None = None  # of its member index (member_index_name); None: before v3

    @classmethod
    def from_dict(cls, d: dict) -> "ShardInfo":
        """A manifest's shard entry, checked: its name becomes a path, its counts bound reads."""
        info = cls(**d)
        check_shard_name(info.name)
        counts = [info.samples, info.payload_bytes, info.file_bytes]
        counts += [] if info.max_sample_bytes is None else [info.max_sample_bytes]
        if not all(type(count) is int and count >= 0 for count in counts):
            raise ValueError(f"shard {info.name}: samples and byte counts must be non-negative integers")
        for digest in (info.sha256, info.index_sha256 or ""):
            if not isinstance(digest, str):
                raise ValueError(f"shard {info.name}: sha256 {digest!r} is not a hex digest")
        return info


@dataclass
class Manifest:
    name: str
    modality: str
    arguments: dict
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # [{"source": ..., "reason": ...}]
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @property
    def totals(self) -> dict:
        return {
            "shards": len(self.shards),
            "samples": sum(s.samples for s in self.shards),
            "payload_bytes": sum(s.payload_bytes for s in self.shards),
            "file_bytes": sum(s.file_bytes for s in self.shards),
            "skipped": len(self.skipped),
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = self.totals
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        d = dict(d)
        d.pop("totals", None)
        d["shards"] = [ShardInfo.from_dict(s) for s in d["shards"]]
        manifest = cls(**d)
        check_name(manifest.name)
        if not (isinstance(manifest.arguments, dict) and isinstance(manifest.skipped, list)
                and type(manifest.version) is int):
            raise ValueError("arguments, skipped or version of the wrong type")
        return manifest

    def save(self, directory: Path) -> None:
        write_json_atomic(Path(directory) / INDEX_NAME, self.to_dict())


def load_manifest(directory) -> Manifest:
    """Read DIR/index.json (DIR a path or a URL); a missing, unreachable or malformed manifest is
    a one-line UsageError."""
    path = storage.join(directory, INDEX_NAME)
    try:
        data = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        cause = f" ({error})" if storage.is_url(path) else ""  # e.g. the bucket does not exist
        raise UsageError(f"{path}: no such manifest{cause} (is {directory} a converted dataset "
                         "directory?)") from None
    except storage.StorageError as error:
        raise UsageError(str(error)) from None
    try:
        manifest = Manifest.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, TypeError, KeyError, UsageError) as error:
        raise UsageError(f"{path}: not a valid manifest ({error})") from None
    if manifest.format != FORMAT_NAME or manifest.version > FORMAT_VERSION:
        raise UsageError(f"{path}: format {manifest.format!r} v{manifest.version} is not readable "
                         f"by this version ({FORMAT_NAME} v{FORMAT_VERSION})")
    return manifest


def sample_bound(info: ShardInfo) -> int:
    """The most bytes one sample of this shard may hold: its recorded longest sample, or, for a
    shard written by v1, the payload bytes of the whole shard."""
    return info.payload_bytes if info.max_sample_bytes is None else info.max_sample_bytes


def member_index_name(shard: str) -> str:
    """The file name of a shard's member index: NAME-000000.tar.idx."""
    return shard + MEMBER_INDEX_SUFFIX


def shard_name(name: str, number: int) -> str:
    return f"{check_name(name)}-{number:06d}.tar"


def payload_name(compression: str) -> str:
    """The extension of a sample's byte-stream member: "bin.zst" for zstd, "bin" for none."""
    if compression not in PAYLOAD_NAMES:
        raise ValueError(f"unknown compression {compression!r} (expected one of {', '.join(PAYLOAD_NAMES)})")
    return PAYLOAD_NAMES[compression]


# ---------------------------------------------------------------------------------------------
# writing


def payload_compressor(level: int) -> zstandard.ZstdCompressor:
    """The zstd compressor of byte-stream members: frames that declare their content size (when it
    is known in advance) and end with a checksum of it."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)


def ustar_header(name: str, size: int) -> bytes:
    """A 512-byte ustar header for a regular file: mode 0644, owner 0/0, mtime 0.

    The same bytes as tarfile.TarInfo.tobuf(USTAR_FORMAT) with those fields, written by hand
    because every field is then visibly fixed, and because conversion workers make two headers
    per sample: this takes about 5 µs a header where tobuf takes about 15 µs.
    """
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise ValueError(f"member name {name!r} is longer than 100 bytes")
    if size >= 8**11:
        raise ValueError(f"member {name} is {size} bytes; ustar members stop below 8 GiB")
    header = bytearray(512)
    header[0:len(encoded)] = encoded
    header[100:108] = b"0000644\0"  # mode
    header[108:116] = b"0000000\0"  # uid
    header[116:124] = b"0000000\0"  # gid
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"  # mtime
    header[148:156] = b" " * 8  # checksum field counts as spaces while summing
    header[156:157] = b"0"  # regular file
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tar_member(name: str, data: bytes) -> bytes:
    """One regular-file member: header, data, zero padding to the next 512-byte block."""
    return ustar_header(name, len(data)) + data + bytes(-len(data) % 512)


def meta_member(key: str, meta: dict) -> bytes:
    meta_bytes = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return tar_member(f"{key}.json", meta_bytes)


def sample_members(key: str, compression: str, payload: bytes, meta: dict) -> bytes:
    """A sample's two members, `<key>.bin.zst` (or `.bin`) then `<key>.json`, as tar bytes.

    Conversion workers call this, so that the process writing the shard only appends."""
    check_key(key)
    return tar_member(f"{key}.{payload_name(compression)}", payload) + meta_member(key, meta)


class ShardWriter:
    """Writes one shard: `add` samples, then `close` to publish it atomically under its name.

    Payloads arrive already encoded (zstd-compressed or raw): as bytes, as the path of a spill
    file holding them (large documents; removed once copied), or already formatted as tar
    members by `sample_members`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp")
        self._file = open(self.tmp_path, "wb")
        self._out = HashingWriter(self._file)
        self.samples = 0
        self.payload_bytes = 0
        self.max_sample_bytes = 0
        self.index = []  # per sample: offset, member bytes, byte-stream length (INDEX_DTYPE)

    @property
    def file_bytes(self) -> int:
        return self._out.size

    def add(self, key: str, compression: str, payload, payload_length: int, meta: dict) -> None:
        """compression: "zstd" or "none", how `payload` is encoded; payload: bytes, or a Path to
        a spill file."""
        if not isinstance(payload, Path):
            self.add_members(sample_members(key, compression, payload, meta), payload_length)
            return
        check_key(key)
        start, size = self._out.size, payload.stat().st_size
        self._out.write(ustar_header(f"{key}.{payload_name(compression)}", size))
        with open(payload, "rb") as f:
            while chunk := f.read(1 << 20):
                self._out.write(chunk)
        self._out.write(bytes(-size % 512))
        payload.unlink()
        self.add_members(meta_member(key, meta), payload_length, start)

    def add_members(self, members: bytes, payload_length: int, start: int | None = None) -> None:
        """A sample already formatted by `sample_members` (or its last members, from `start`)."""
        start = self._out.size if start is None else start
        self._out.write(members)
        self.index.append((start, self._out.size - start, payload_length))
        self.samples += 1
        self.payload_bytes += payload_length
        self.max_sample_bytes = max(self.max_sample_bytes, payload_length)

    def close(self) -> ShardInfo:
        self._out.write(bytes(1024))  # end of archive: two zero blocks
        if self._out.size % 10240:  # GNU tar's default record size, as tarfile pads too
            self._out.write(bytes(-self._out.size % 10240))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        index = np.array(self.index, dtype=INDEX_DTYPE).reshape(-1, 3).tobytes()
        index_path = self.path.with_name(member_index_name(self.path.name))
        write_bytes_atomic(index_path, index)  # before the shard: a published shard has its index
        os.replace(self.tmp_path, self.path)
        fsync_dir(self.path.parent)
        return ShardInfo(self.path.name, self.samples, self.payload_bytes, self.file_bytes,
                         self._out.sha256.hexdigest(), self.max_sample_bytes,
                         hashlib.sha256(index).hexdigest())

    def abort(self) -> None:
        """Drop the unfinished shard. Closing flushes, and may fail as the write that stopped it
        did (a full disk): the file is closed all the same, and removed."""
        try:
            self._file.close()
        except OSError:
            pass
        self.tmp_path.unlink(missing_ok=True)
