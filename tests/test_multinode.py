"""Two nodes on one machine: the deepspeed launcher in its no-ssh mode, started once per node as
SLURM's srun would (docs/training.md, Several nodes), each node a process tree of its own with
one rank on 127.0.0.1. The run equals one node with two ranks; SLURM's SIGUSR1 sent to every
process of one node (its launcher, rank and loader worker) stops both ranks at the same step with
a checkpoint, and the run resumes from it. Two ranks on one node through the launcher (which
builds DeepSpeed's CPU communication op on its first run on a machine) stopped by a group SIGTERM
three times in a row resume each time and end as a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import (ENV, REPO, free_port, losses, run_training, traced, train_command, train_flags,
                     wait_for_steps, write_config)

from train import checkpoint
from train.export import model_from_checkpoint

pytestmark = pytest.mark.slow  # every test here starts trainer processes

# ZeRO-2, so that each rank saves an optimizer partition of its own; one loader worker per rank
SECTIONS = {"optim": {"total_steps": 12}, "deepspeed": {"zero_stage": 2},
            "data": {"micro_batch_size": 2, "num_workers": 1}, "run": {"checkpoint_every": 4}}


def node_command(config: Path, hostfile: Path, node_rank: int, port: int, extra=()) -> list[str]:
    """One node's launcher, as the README's SLURM recipe starts it: SIGUSR1 ignored (the launcher
    cannot pass it on, and SLURM signals the ranks themselves)."""
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--no_ssh",
                "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                "--num_nodes", "2", "--num_gpus", "1", "--module", "train.main", *train_flags(config, extra)]
    return ["bash", "-c", 'trap "" USR1; exec "$@"', "node", *launcher]


class TwoNodes:
    """Both nodes' launchers, each in a session (process group) of its own, logging to files."""

    def __init__(self, config: Path, extra=((), ()), env=ENV):
        root = config.parent
        hostfile = root / "hostfile"
        hostfile.write_text("node-a slots=1\nnode-b slots=1\n")  # names only: --no_ssh reaches neither
        port = free_port()
        self.logs = [root / f"node{rank}.log" for rank in (0, 1)]
        self.processes = []
        for rank, log in enumerate(self.logs):
            with open(log, "w") as out:
                self.processes.append(subprocess.Popen(
                    node_command(config, hostfile, rank, port, extra[rank]), cwd=REPO, env=env,
                    start_new_session=True, stdout=out, stderr=subprocess.STDOUT))

    def wait(self, timeout: int = 300) -> list[int]:
        return [process.wait(timeout=timeout) for process in self.processes]

    def log(self, node: int) -> str:
        return self.logs[node].read_text()

    def logs_tail(self) -> str:
        return "\n".join(f"--- node {n}:\n{self.log(n)[-2000:]}" for n in (0, 1))


def run_two_nodes(config: Path, env=ENV) -> TwoNodes:
    nodes = TwoNodes(config, env=env)
    assert nodes.wait() == [0, 0], nodes.logs_tail()
    return nodes


@pytest.fixture(scope="module")
def one_node(data, tmp_path_factory):
    """The reference: the same config on one node with two ranks."""
    root = tmp_path_factory.mktemp("one-node")
    run_training(write_config(root, data["text"], **SECTIONS), ranks=2)
    return root / "run"


def rank_states(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((folder / "state").glob("rank-*.json"))]


def test_two_nodes_train_as_one_node_with_two_ranks(tmp_path, data, one_node):
    extensions = tmp_path / "torch-extensions"
    run_two_nodes(write_config(tmp_path, data["text"], **SECTIONS),
                  env={**ENV, "TORCH_EXTENSIONS_DIR": str(extensions)})
    assert not list(extensions.rglob("*.so"))  # no shared-memory op built: the ranks are apart
    run_dir = tmp_path / "run"
    assert losses(run_dir) == losses(one_node)  # the same all-reduces: bit for bit
    assert traced(run_dir) == traced(one_node)
    final = run_dir / "checkpoints" / "step-000012"
    assert checkpoint.damage(final) is None
    assert [(s["rank"], s["world_size"], s["parts"]["run"]["step"]) for s in rank_states(final)] == [
        (0, 2, 12), (1, 2, 12)]  # node 1's rank saved as global rank 1, not as its local rank 0
    assert len(list(final.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # both ZeRO partitions
    trained, reference = (model_from_checkpoint(run)[0].state_dict() for run in (final, one_node))
    assert all(torch.equal(trained[name], reference[name]) for name in reference)
    assert sorted(p.name for p in (run_dir / "trace").iterdir()) == ["rank-0.jsonl", "rank-1.jsonl"]


def test_sigusr1_to_one_node_stops_both_at_one_step_and_the_run_resumes(tmp_path, data, one_node):
    config = write_config(tmp_path, data["text"], **SECTIONS)
    run_dir = tmp_path / "run"
    nodes = TwoNodes(config)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len(losses(run_dir)) < 2:
        assert all(p.poll() is None for p in nodes.processes) and time.time() < deadline, nodes.logs_tail()
        time.sleep(0.05)
    os.killpg(nodes.processes[1].pid, signal.SIGUSR1)  # node 1 only: its launcher, rank 1, its worker
    assert nodes.wait() == [0, 0], nodes.logs_tail()
    stopped = len(losses(run_dir))
    assert stopped < 12, "the signal came too late"
    folder = run_dir / "checkpoints" / f"step-{stopped:06d}"
    assert f"pre-empted (SIGUSR1) at step {stopped}: saved {folder}" in nodes.log(0)  # rank 0 says it
    assert checkpoint.damage(folder) is None
    assert [s["parts"]["run"]["step"] for s in rank_states(folder)] == [stopped, stopped]

    resumed = run_two_nodes(config)
    assert f"resuming from {folder} (step {stopped})" in resumed.log(0)
    assert torch.allclose(torch.tensor(losses(run_dir)), torch.tensor(losses(one_node)), rtol=1e-4, atol=1e-5)
    assert traced(run_dir) == traced(one_node)  # nothing repeated or skipped


def test_group_sigterm_three_times_on_two_ranks_then_the_run_completes(tmp_path, data, one_node):
    """kill, resume, kill, resume, kill, resume: each resume starts from the complete checkpoint
    the kill left, the steps continue, and the whole run trains on the sequences of one that was
    never stopped. One node, two ranks, through the launcher (it exits non-zero after a SIGTERM,
    whatever its ranks did: rank 0's line and the checkpoint tell how they ended)."""
    config = write_config(tmp_path, data["text"], **SECTIONS)
    run_dir = tmp_path / "run"
    saved = 0
    for attempt in range(3):
        process = subprocess.Popen(train_command(config, ranks=2), cwd=REPO, env=ENV, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_steps(process, run_dir, saved + 1)  # a step past the resume: room for 3 stops in 12
        os.killpg(process.pid, signal.SIGTERM)  # the launchers, both ranks and their workers
        stderr = process.communicate(timeout=120)[1]  # until every process holding stderr (the
        # launchers, ranks and loader workers) has ended: none outlives the stop
        if saved:
            assert f"resuming from {run_dir / 'checkpoints' / f'step-{saved:06d}'} (step {saved})" in stderr
        steps = len(losses(run_dir))  # metrics of redone steps are dropped on resume
        assert saved + 1 <= steps < 12, f"attempt {attempt}: {stderr[-2000:]}"
        folder = run_dir / "checkpoints" / f"step-{steps:06d}"
        assert f"stopped (SIGTERM) at step {steps}: saved {folder}" in stderr, stderr[-2000:]
        assert checkpoint.latest(run_dir / "checkpoints") == folder and checkpoint.damage(folder) is None
        assert [s["parts"]["run"]["step"] for s in rank_states(folder)] == [steps, steps]
        saved = steps
    final = run_training(config, ranks=2)
    assert f"(step {saved})" in final.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 13))
    assert traced(run_dir) == traced(one_node)  # nothing lost, nothing repeated
    assert torch.allclose(torch.tensor(losses(run_dir)), torch.tensor(losses(one_node)), rtol=1e-4, atol=1e-5)


def test_an_out_dir_that_one_node_does_not_share_is_one_error_on_both(tmp_path, data):
    """Node 1 writes to a folder of its own (as with a node-local disk): both stop at start-up
    with one line, before any checkpoint could be half in one place and half in another."""
    config = write_config(tmp_path, data["text"], **SECTIONS)
    nodes = TwoNodes(config, extra=((), (f"run.out_dir={tmp_path / 'node-local' / 'run'}",)))
    assert nodes.wait() == [2, 2], nodes.logs_tail()
    for node in (0, 1):
        errors = [line for line in nodes.log(node).splitlines() if "do not see" in line]
        assert len(errors) == 1 and "rank(s) [1] do not see what rank 0 writes there" in errors[0]
        assert "Traceback" not in nodes.log(node)
    assert not (tmp_path / "run" / "checkpoints").exists()
