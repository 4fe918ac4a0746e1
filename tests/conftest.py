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


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A training and a validation text dataset, made once per test file."""
    from helpers import make_dataset

    root = tmp_path_factory.mktemp("data")
    return {"text": make_dataset(root, "text", 120, seed=1),
            "val": make_dataset(root, "val", 12, seed=2)}


@pytest.fixture
def world_of_one(tmp_path):
    """A gloo process group of this process alone."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
