"""The shard writer: samples → one deterministic, atomic WebDataset tar and its member index.

    sample_members(key, …)          `<key>.bin.zst` (or `.bin`) then `<key>.json`, as tar bytes
          │                         (made in conversion workers)
          ▼
    ShardWriter.add / add_members   appended to .NAME-000000.tmp.tar, hashed and indexed
          │
          ▼
    ShardWriter.close               NAME-000000.tar.idx published, then NAME-000000.tar ─▶ ShardInfo

Invariants:
- a shard's bytes depend only on its samples: members in a fixed order, mtime 0, owner 0/0, mode
  0644, plain ustar headers (no pax headers carrying times), so a re-run gives byte-identical
  files and sha256;
- a file under a final name is complete (temporary name, fsync, rename: pipeline.format.files),
  and a published shard has its index;
- zstd frames declare their content size and end with a checksum of it, so a member verifies
  without the manifest.

The layout, names and manifest are pipeline.format.manifest's; pipeline.format.reader reads back.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import zstandard

from pipeline.format.files import HashingWriter, publish, temporary_path, write_bytes_atomically
from pipeline.format.manifest import INDEX_DTYPE, ShardInfo, check_key, member_index_name, payload_name


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
        self.tmp_path = temporary_path(self.path)
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
        self._file.close()
        index = np.array(self.index, dtype=INDEX_DTYPE).reshape(-1, 3).tobytes()
        index_path = self.path.with_name(member_index_name(self.path.name))
        write_bytes_atomically(index_path, index)  # before the shard: a published shard has its index
        publish(self.tmp_path, self.path)
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
