"""The files a command writes are checked before any work starts (they are then written whole or
not at all, by pipeline.format.files.write_atomically)."""

from pathlib import Path

from pipeline.format.errors import UsageError


def check_output_file(path: Path, flag: str) -> None:
    """A file can be written at `path`: it is not a folder and its folder exists (UsageError)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name the file to write")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {path.parent} does not exist (or is not a folder)")
