"""Running a converter's tasks: in this process, or on a pool of worker processes, results in
task order.

    tasks ──▶ [worker: run_task → samples formatted as tar members] ──▶ (task index, TaskResult)
              at most 2 × workers tasks in flight           in task order, whatever finished first

Workers are spawned (not forked: the parent may hold threads that fork would copy mid-lock), each
builds its own Encoder (a zstd context cannot be pickled), and dies with its parent (Linux).
"""

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.convert.samples import Encoder, TaskResult
from pipeline.format.shards import sample_members

log = logging.getLogger("megabyte.convert")

PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent dies


_worker_encoder = None


def _init_worker(parent: int, compression: str, level: int, spill_dir: Path) -> None:
    global _worker_encoder
    die_with_parent(parent)
    _worker_encoder = Encoder(compression, level, spill_dir)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux). A killed converter
    would otherwise leave its workers waiting for tasks forever, and with them multiprocessing's
    resource tracker, which ends when the last process holding its pipe does."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning(f"worker {os.getpid()}: prctl failed ({os.strerror(ctypes.get_errno())}); "
                        "it will outlive a killed converter")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _run_in_worker(run_task, task) -> TaskResult:
    return run_task_formatted(run_task, task, _worker_encoder)


def run_task_formatted(run_task, task, encoder: Encoder) -> TaskResult:
    """Run a task and turn each in-memory sample into its tar member bytes right there, in the
    worker: the process writing the shards then only appends, hashes and writes."""
    result = run_task(task, encoder)
    for sample in result.samples:
        if isinstance(sample.payload, bytes):
            sample.members = sample_members(sample.key, encoder.compression, sample.payload, sample.meta)
            sample.payload = None
    return result


def run_tasks(converter, tasks, *, first_task: int, workers: int, compression: str, level: int,
              spill_dir: Path):
    """Yield (task_index, TaskResult) in task order; tasks before `first_task` are not run.
    Payloads are encoded with `compression` at `level`; large ones spill to files in `spill_dir`.

    With workers > 1, at most 2 * workers tasks are in flight, so memory stays bounded whatever
    the corpus size.
    """
    encoder_args = (compression, level, spill_dir)
    if workers <= 1:
        encoder = Encoder(*encoder_args)
        for task_index, task in enumerate(tasks):
            if task_index >= first_task:
                yield task_index, run_task_formatted(converter.run_task, task, encoder)
        return
    # spawn, not fork: the parent may hold threads (torch, tqdm) that fork would copy mid-lock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(), *encoder_args)) as pool:
        in_flight = deque()
        try:
            for task_index, task in enumerate(tasks):
                if task_index < first_task:
                    continue
                in_flight.append((task_index, pool.submit(_run_in_worker, converter.run_task, task)))
                if len(in_flight) >= 2 * workers:
                    index, future = in_flight.popleft()
                    yield index, future.result()
            while in_flight:
                index, future = in_flight.popleft()
                yield index, future.result()
        finally:
            for _, future in in_flight:
                future.cancel()
