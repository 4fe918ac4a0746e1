"""The input files of a conversion: sources → a sorted file list → the files of one --part.

    SRC files, folders, globs ──expand_sources──▶ sorted, de-duplicated files
          ──part_files──▶ (file index, path) of part i/n: file_index % n == i

The file index is a file's position in the whole sorted list, whatever the part: sample keys
start with it, so the parts of a split conversion merge into the dataset one run would give.
"""

import fnmatch
import glob
import os
from pathlib import Path

from pipeline.format.errors import UsageError


def expand_sources(sources: list[str], include: str | None = None,
                   exclude: list[str] = ()) -> list[Path]:
    """Files, directories (recursive) and globs → a sorted, de-duplicated list of files.

    Inside directories, `include` keeps the file names matching a glob (e.g. "*.py") and
    `exclude` drops the paths, relative to the directory, matching any of its globs (e.g.
    "site-packages/*"). A source that does not exist, or a glob that matches nothing, is a
    UsageError.
    """
    files = set()
    for source in sources:
        if glob.has_magic(source):
            matches = [Path(p) for p in glob.glob(source, recursive=True)]
            if not matches:
                raise UsageError(f"{source}: the pattern matches no file")
        elif os.path.exists(source):
            matches = [Path(source)]
        else:
            raise UsageError(f"{source}: no such file or directory")
        for match in matches:
            if match.is_dir():
                files.update(p for p in match.rglob(include or "*") if p.is_file() and not any(
                    fnmatch.fnmatch(str(p.relative_to(match)), pattern) for pattern in exclude))
            elif match.is_file():
                files.add(match)
    if not files:
        raise UsageError(f"no input files found in {' '.join(sources)}")
    return sorted(files)


def parse_part(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 <= i < n; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--part {text}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UsageError(f"--part {text}: need 0 <= i < n")
    return i, n


def parse_size(text: str) -> int:
    """'256MiB', '64K', '1G', '4096' → bytes (binary multiples)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1] if number and number[-1] in units else ""
    try:
        value = int(float(number[: len(number) - len(unit)]) * units[unit])
    except ValueError:
        raise UsageError(f"{text!r} is not a size (examples: 256MiB, 64K, 1G)") from None
    if value <= 0:
        raise UsageError(f"size {text!r} must be positive")
    return value


def part_files(files: list[Path], part: tuple[int, int]) -> list[tuple[int, Path]]:
    """(file index, path) of the files in part i of n: those whose index is i modulo n."""
    part_index, part_count = part
    return [(i, f) for i, f in enumerate(files) if i % part_count == part_index]
