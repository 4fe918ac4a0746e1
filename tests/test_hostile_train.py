"""The trainer stopped and resumed the unlucky way: a SIGTERM to the whole process group (as SLURM,
Kubernetes and docker stop a job), with real processes."""

import os
import signal
import subprocess
import time

from test_train import ENV, REPO, data, losses, train_command, write_config  # noqa: F401 (fixture)


def start_in_own_session(config) -> subprocess.Popen:
    return subprocess.Popen(train_command(config), cwd=REPO, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_steps(process: subprocess.Popen, run_dir, steps: int) -> None:
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len(losses(run_dir)) < steps:
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)


def test_group_sigterm_with_workers_saves_exits_0_and_resumes(tmp_path, data):
    config = write_config(tmp_path, data["text"], data={"num_workers": 2},
                          optim={"total_steps": 100000}, run={"checkpoint_every": 0})
    run_dir = tmp_path / "run"
    saved = 0
    for attempt in range(3):
        process = start_in_own_session(config)
        wait_for_steps(process, run_dir, saved + 2)
        os.killpg(process.pid, signal.SIGTERM)  # the trainer and its loader workers, all at once
        stderr = process.communicate(timeout=120)[1]
        assert process.returncode == 0, f"attempt {attempt}: {stderr[-2000:]}"
        if saved:
            assert f"(step {saved})" in stderr, stderr[-2000:]  # resumed from the last save
        steps = len(losses(run_dir))  # metrics of redone steps are dropped on resume
        assert steps >= saved + 2
        latest = (run_dir / "checkpoints" / "latest").read_text().strip()
        assert latest == f"step-{steps:06d}"
        assert (run_dir / "checkpoints" / latest / "COMPLETE").is_file()
        saved = steps
        try:  # no worker outlived the run
            os.killpg(process.pid, 0)
            raise AssertionError(f"attempt {attempt}: processes of the group are still alive")
        except ProcessLookupError:
            pass
