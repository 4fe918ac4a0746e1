"""Training on a CPU: hand large freed buffers back to the system (glibc's malloc).

glibc serves a request of at least its mmap threshold with a mapping of its own, returned when
freed, and anything smaller from its heap, which keeps freed memory for later. The threshold starts
at 128 KiB and rises, up to 32 MiB, each time a mapped block is freed. A training step over a long
sequence frees large blocks early, so the buffers of a few megabytes that activation checkpointing
allocates piece after piece then come from the heap and stay there: the peak of a MegaByte step at
T = 1,228,800 is 7.0 GiB, against 3.1 GiB with a fixed threshold of 1 MiB (BENCHMARKS.md, "Long
sequences"). CPU runs fix it at 1 MiB, as MALLOC_MMAP_THRESHOLD_=1048576 in the environment would.
"""

import ctypes
import os

MMAP_THRESHOLD = 1 << 20  # bytes: buffers this large or larger are mapped, and unmapped when freed
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD; True if it was set here. A threshold the
    environment sets (MALLOC_MMAP_THRESHOLD_) is left as it is, and so is a C library without
    mallopt (macOS, musl)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
