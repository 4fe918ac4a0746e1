"""Writing a file whole or not at all, hashing a file, and confining a file name read from a
record to its folder (inside): the one way every writer and reader does it.

    write_atomically(path, write)
      write(.NAME.tmp.SUFFIX)   beside `path`, hidden, keeping the suffix (PIL, soundfile and
           │                    matplotlib choose the format by it)
      fsync the file ──▶ os.replace onto `path` ──▶ fsync the folder (the rename is durable)
      on any failure: the temporary file is removed, `path` is untouched

A reader never sees half a file under its final name, a crash leaves at most a hidden `.*.tmp*`
file beside it, and once write_atomically returns the file survives a power cut.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.format import storage
from pipeline.format.errors import UsageError


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed: `.NAME.tmp.SUFFIX` in the same folder (the
    rename must not cross filesystems)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (which makes the renames into it durable), by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Rename a complete temporary file onto `path` durably: fsync the file, rename, fsync the
    folder."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)


def write_atomically(path: Path, write: Callable[[Path], None], *, on_error: str = "raise") -> None:
    """write(temporary path), then publish it onto `path` (see the module docstring).

    on_error: what an OSError becomes once the temporary file is removed. "raise": itself (the
    caller knows what to say, e.g. that a conversion can be resumed); "usage": a one-line
    UsageError naming `path`, for a command's output file."""
    if on_error not in ("raise", "usage"):
        raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'usage'")
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and on_error == "usage":
            raise UsageError(f"{path}: cannot write it ({error.strerror or error})") from None
        raise


def write_bytes_atomically(path: Path, data: bytes, *, on_error: str = "raise") -> None:
    write_atomically(path, lambda tmp: tmp.write_bytes(data), on_error=on_error)


def write_text_atomically(path: Path, text: str, *, on_error: str = "raise") -> None:
    write_bytes_atomically(path, text.encode("utf-8"), on_error=on_error)


def write_json_atomically(path: Path, obj) -> None:
    """A dataset's JSON files (manifest, journal): indented, sorted keys, so the same content
    gives the same bytes."""
    write_text_atomically(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def file_sha256(location) -> str:
    """The sha256 of a file, a local path or a URL (read through pipeline.format.storage)."""
    digest = hashlib.sha256()
    with storage.open_binary(location) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


def inside(folder: Path, name) -> Path | None:
    """folder/name, if `name` (read from a record) is a relative path that stays inside `folder`:
    no '..', not absolute, no symlink leading out; else None."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name or name.startswith("/"):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    path = folder / name
    return path if path.resolve().is_relative_to(folder.resolve()) else None
