"""The files a command writes: checked before any work starts, then written whole or not at all."""

import os
from collections.abc import Callable
from pathlib import Path

from pipeline.format.errors import UsageError


def check_output_file(path: Path, flag: str) -> None:
    """A file can be written at `path`: it is not a folder and its folder exists (UsageError)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name the file to write")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {path.parent} does not exist (or is not a folder)")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(temporary path) beside `path`, then rename it onto `path`: a reader never sees half a
    file, and a failed write leaves nothing behind. The temporary name keeps the suffix, so that
    writers that choose the format by it (PIL, soundfile, matplotlib) choose the right one."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise UsageError(f"{path}: cannot write it ({error.strerror or error})") from None
        raise
