"""Trainer processes forked from the test process, so that they start with torch, DeepSpeed and
torch's compiler already imported (a fresh `python -m train.main` spends ~6 s importing them,
most of what a test's tiny run costs).

    start(["-m", "train.main", *flags], ranks=2)      # like `torchrun --nproc-per-node 2 -m train.main …`
    start(["tests/elastic_run.py", *flags], ranks=1)  # like `python tests/elastic_run.py …`

Each call forks a launcher in a session (process group) of its own, as `start_new_session=True`
would; with one rank the launcher is the rank itself, with several it forks them (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set as torchrun sets them), ignores the stop signals a
test sends to the whole group (each rank gets them itself), stops the others once one fails, and
exits with the first failure's code. A rank runs the module or script as `__main__`, in the
repository, with the environment given, stdout and stderr into files. The processes are real:
their own pids, signals, exit codes and gloo communication; only the imports are inherited.
"""

import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Forked:
    """A forked launcher, read like subprocess.Popen (pid, poll, wait, communicate, returncode),
    with stdout and stderr as the text written so far."""

    def __init__(self, pid: int, out: Path, err: Path):
        self.pid, self.returncode = pid, None
        self.out, self.err = out, err

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked launcher {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout, self.stderr

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def warm_imports() -> None:
    """What a trainer process imports before its first step, imported here once."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed picks its accelerator on import
    with warnings.catch_warnings():  # DeepSpeed's own deprecation warnings, not the tests'
        warnings.simplefilter("ignore")
        import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401 (imports torch's inductor)
        import torch._dynamo  # noqa: F401 (torch.optim imports it on the first param group)

        import train.main  # noqa: F401


def start(args: list[str], env: dict, ranks: int = 1, port: int | None = None) -> Forked:
    """Fork a launcher running `args` (["-m", MODULE, ...] or [SCRIPT, ...]) on `ranks` ranks."""
    warm_imports()
    logs = Path(tempfile.mkdtemp(prefix="forked-"))
    out, err = logs / "stdout", logs / "stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    def launcher() -> int:
        os.setsid()
        redirect(out, err)
        return launch(args, env, ranks, port)

    pid = os.fork()
    if pid == 0:
        exit_child(launcher)
    return Forked(pid, out, err)


def exit_child(work) -> None:
    """In a forked child: run work() and leave with its exit code (1 on an exception, its
    traceback on stderr), never returning into the test process's code."""
    code = 1
    try:
        code = work()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def redirect(out: Path, err: Path) -> None:
    """stdin from /dev/null, stdout and stderr into the files, line-buffered."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def launch(args: list[str], env: dict, ranks: int, port: int | None) -> int:
    """In the launcher: run the ranks and return the exit code."""
    if ranks == 1:
        return run_rank(args, env)
    rank_env = {**env, "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    pids = []
    for rank in range(ranks):
        pid = os.fork()
        if pid == 0:
            exit_child(lambda: run_rank(args, {**rank_env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
        pids.append(pid)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    first_failure = 0
    while pids:
        pid, status = os.wait()
        pids.remove(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and first_failure == 0:
            first_failure = code if code > 0 else 128 - code
            for other in pids:  # as torchrun: one rank failing stops the others
                os.kill(other, signal.SIGTERM)
    return first_failure


def run_rank(args: list[str], env: dict) -> int:
    """Run the module or script as __main__ with `env`, in the repository; its exit code."""
    import torch

    os.chdir(REPO)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))  # the parent's OpenMP pool is gone
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:  # as `python SCRIPT`: its folder first on the path
            sys.argv = list(args)
            sys.path.insert(0, str(Path(args[0]).resolve().parent))
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    return 0
