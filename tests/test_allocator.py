"""train/allocator.py: a CPU run over long sequences fixes glibc's mmap threshold, unless the
environment already has. Each check runs in a fresh process: the threshold would otherwise stay
set in the test process and in every trainer forked from it (tests/forked.py), slowing them down."""

import os
import platform
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow  # a process each

CALL = "from train.allocator import LONG_SEQUENCE, return_freed_memory; print(return_freed_memory(LONG_SEQUENCE))"


def called(**environment) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    return subprocess.run([sys.executable, "-c", CALL], cwd=REPO, env={**env, **environment},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_threshold_from_the_environment_stands():
    assert called(MALLOC_MMAP_THRESHOLD_="65536") == "False"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
def test_glibc_takes_the_threshold():
    assert called() == "True"
