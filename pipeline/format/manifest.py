"""A dataset's layout, its names and its manifest, `index.json`.

    DIR/
      NAME-000000.tar      <key>.bin.zst  the byte stream (zstd; `.bin` when uncompressed)
                           <key>.json     metadata: modality, source, length, modality fields
      NAME-000000.tar.idx  its member index: per sample, in stored order, three little-endian
                           int64 (INDEX_DTYPE): the offset of its first member's header, the
                           bytes its members take (headers and padding included), its
                           byte-stream length
      NAME-000001.tar
      NAME-000001.tar.idx
      ...
      index.json           written last: format, version, modality, arguments, per shard {name,
                           samples, payload bytes, file bytes, longest sample, sha256 of the
                           shard and of its index}, totals, skipped inputs with their reasons

Invariants:
- a directory with an index.json holds a complete dataset: the manifest is written last, and a
  shard's index is published before its shard;
- names read back from a shard or a manifest become file names (render, merge), so they follow
  fixed patterns, checked where they are read: keys KEY_PATTERN, dataset names NAME_PATTERN,
  shard files SHARD_PATTERN;
- the counts of a shard entry bound what a reader allocates (sample_bound), and are bounded by
  the shard's size (check_counts), itself checked against the file before it is read; a field
  that older versions of the format did not write is None, and readers fall back as
  sample_bound does.

pipeline.format.shards writes shards; pipeline.format.reader reads them back.
"""

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipeline.format import storage
from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import write_json_atomically

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
MIN_SAMPLE_BYTES = 1024  # a sample's members take at least two 512-byte headers
# the most bytes of byte stream one stored byte can stand for: a zstd RLE block (3-byte header
# and the byte) makes 128 KiB; a raw member makes one
MAX_RATIO = (128 << 10) // 4
MAX_COUNT = 1 << 60  # no count of a manifest or a member index reaches it (int64 sums never overflow)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")  # a dataset name: NAME of NAME-000000.tar
SHARD_PATTERN = re.compile(rf"(?!.*\.\.)({NAME_PATTERN.pattern})-[0-9]{{6,}}\.tar")


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
# the manifest


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
        check_entry(d, cls, "a shard entry")
        info = cls(**d)
        check_shard_name(info.name)
        counts = [info.samples, info.payload_bytes, info.file_bytes]
        counts += [] if info.max_sample_bytes is None else [info.max_sample_bytes]
        if not all(type(count) is int and 0 <= count < MAX_COUNT for count in counts):
            raise ValueError(f"shard {info.name}: samples and byte counts must be integers in 0..2^60")
        check_counts(info)
        for digest in (info.sha256, info.index_sha256 or ""):
            if not isinstance(digest, str):
                raise ValueError(f"shard {info.name}: sha256 {digest!r} is not a hex digest")
        return info


def check_entry(d, cls, what: str, extra: set = frozenset()) -> None:
    """`d` is a JSON object whose keys are fields of `cls` (or `extra`)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} is a {type(d).__name__}, not a JSON object")
    unknown = set(d) - {f.name for f in fields(cls)} - set(extra)
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}")


def check_counts(info: ShardInfo) -> None:
    """What a shard entry claims must fit the shard's file_bytes (itself checked against the file
    by every reader before it reads): each sample takes at least two member headers, and no
    byte stream is more than MAX_RATIO times the bytes that store it."""
    if info.samples * MIN_SAMPLE_BYTES > info.file_bytes:
        raise ValueError(f"shard {info.name}: {info.samples} samples cannot fit in "
                         f"{info.file_bytes} bytes")
    if info.payload_bytes > MAX_RATIO * info.file_bytes:
        raise ValueError(f"shard {info.name}: {info.payload_bytes} payload bytes cannot come from "
                         f"{info.file_bytes} bytes")
    if info.max_sample_bytes is not None and info.max_sample_bytes > info.payload_bytes:
        raise ValueError(f"shard {info.name}: its longest sample ({info.max_sample_bytes} bytes) is "
                         f"longer than all its samples ({info.payload_bytes})")


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
        check_entry(d, cls, "the manifest", extra={"totals"})
        if not isinstance(d["shards"], list):
            raise ValueError(f"shards is a {type(d['shards']).__name__}, not a list")
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
        write_json_atomically(Path(directory) / INDEX_NAME, self.to_dict())


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
