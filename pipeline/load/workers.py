"""Loader workers and a SIGTERM or SIGUSR1 sent to the whole process group.

Schedulers (SLURM, Kubernetes, docker) and the deepspeed launcher stop a job by signalling every
process in it, DataLoader workers included; SLURM warns of pre-emption with SIGUSR1 the same way.
A worker that died of it would make torch raise in the trainer before it could save; so each
worker leaves such a signal to the trainer, which saves and then closes the loaders, ending the
workers itself.
"""

import os
import signal
import threading
from contextlib import contextmanager
from functools import partial


def leave_group_sigterm_to_trainer(trainer: int, worker_id: int) -> None:
    """worker_init_fn: a SIGTERM from the trainer (pid `trainer`) ends this worker at once, as
    multiprocessing and torch expect when they shut workers down; one from anyone else (a
    scheduler, shell or launcher signalling the whole process group) is ignored, since the
    trainer got it too and will save its state (the workers' included) and then close the loader.
    SIGTERM is blocked and a daemon thread waits for it, so that it learns who sent it. SIGUSR1
    (pre-emption ahead) is the trainer's alone: ignored here."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})

    def wait_for_sigterm():
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == trainer:
                os._exit(0)

    threading.Thread(target=wait_for_sigterm, name="sigterm", daemon=True).start()


@contextmanager
def sigterm_blocked():
    """Start DataLoader workers inside this: they inherit a blocked SIGTERM and SIGUSR1 (the
    signal mask survives fork and exec), so that a group signal that lands before their
    worker_init_fn runs waits for it instead of killing them (a spawned worker starts with the
    default action, death). A signal to this process meanwhile is held until the block ends,
    then handled as usual."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_init_fn(num_workers: int):
    """The DataLoader's worker_init_fn for a loader built in this process: the SIGTERM policy
    above, with this process as the trainer; None when there are no workers."""
    return partial(leave_group_sigterm_to_trainer, os.getpid()) if num_workers else None
