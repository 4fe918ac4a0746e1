"""Training on a CPU over long sequences: hand large freed buffers back to the system (glibc).

glibc serves a request of at least its mmap threshold with a mapping of its own, returned when
freed, and anything smaller from its heap, which keeps freed memory for later. The threshold starts
at 128 KiB and rises, up to 32 MiB, each time a mapped block is freed. A training step over a long
sequence frees large blocks early, so the buffers of a few megabytes that activation checkpointing
allocates piece after piece then come from the heap and stay there. Runs over sequences of at least
LONG_SEQUENCE bytes fix the threshold at 1 MiB, as MALLOC_MMAP_THRESHOLD_=1048576 in the
environment would. Every large buffer is then a fresh mapping whose pages the kernel must fault in
and zero: measured for one MegaByte step (BENCHMARKS.md, "Long sequences"), at T = 1,228,800 15%
more time for half the memory (7.3 → 3.6 GB), at 196,608 8% more for 35% less, and for the tiny
model (T = 512, batch 16) 1.65× the time for 17% less, so short sequences keep glibc's default.
MALLOC_MMAP_THRESHOLD_=33554432 (32 MiB, the automatic threshold's ceiling) keeps a long run's
buffers in the heap: faster, and twice the memory.
"""

import ctypes
import os

MMAP_THRESHOLD = 1 << 20  # bytes: buffers this large or larger are mapped, and unmapped when freed
LONG_SEQUENCE = 1 << 18  # bytes: a context at least this long is where the threshold is set
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def return_freed_memory(seq_len: int) -> bool:
    """For a context of seq_len ≥ LONG_SEQUENCE bytes, fix glibc's mmap threshold at
    MMAP_THRESHOLD; True if it was set here. Shorter contexts, a threshold the environment sets
    (MALLOC_MMAP_THRESHOLD_) and a C library without mallopt (macOS, musl) leave it as it is."""
    if seq_len < LONG_SEQUENCE or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
