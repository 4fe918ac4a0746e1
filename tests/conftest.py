"""Fixtures shared by several test files."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def load_bench():
    """load_bench(NAME) → bench/NAME.py as a module; its imports of the scripts beside it
    (common.py, profile_gpu.py, ...) resolve as when it runs from bench/."""
    def load(name: str):
        sys.path.insert(0, str(BENCH))
        try:
            spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(BENCH))
        return module

    return load
