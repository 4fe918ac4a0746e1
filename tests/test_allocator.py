"""train/allocator.py: a CPU run fixes glibc's mmap threshold, unless the environment already has."""

import platform

import pytest

from train.allocator import return_freed_memory


def test_a_threshold_from_the_environment_stands(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert return_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
def test_glibc_takes_the_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert return_freed_memory() is True
