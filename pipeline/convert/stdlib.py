"""The built-in text corpus: the running Python's standard library sources (the demo's data and
the text benchmarks'), there on every machine that runs this project."""

import sysconfig
from pathlib import Path


def stdlib_sources() -> tuple[Path, list[Path]]:
    """The standard library's folder and its .py files (installed packages left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    return root, files
