"""A run moved between cluster shapes trains on one global stream: 2 ranks → 1 rank with 2 loader
workers → 2 ranks, each stop a SIGTERM (checkpoint, clean exit), and the trace of every sequence's
identity over the whole run holds each sequence of the stream exactly once, in order."""

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from helpers import losses, make_dataset, run_training, start_training, write_config

pytestmark = pytest.mark.slow  # every test here starts trainer processes

BATCH = 4  # sequences per optimizer step, all ranks together
STEPS = 12


def identities_by_step(run_dir: Path) -> dict[int, list]:
    """step → the [dataset, sequence] of every sequence trained on at that step, all ranks."""
    steps = defaultdict(list)
    for path in sorted((run_dir / "trace").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps[record["step"]] += [tuple(identity) for identity in record["identities"]]
    return steps


def train_until_sigterm(config: Path, run_dir: Path, ranks: int, extra: list[str], after: int) -> int:
    """Train until `after` more steps are logged, SIGTERM the whole process group (launcher, ranks,
    loader workers), and return the step it saved at."""
    done = len(losses(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
    process = start_training(config, ranks, extra)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() or len(losses(run_dir)) < done + after:
        assert process.poll() is None and time.time() < deadline, (process.stdout + process.stderr)[-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)  # the launcher exits non-zero then, whatever its ranks did
    output = "".join(process.communicate(timeout=180))
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert (run_dir / "checkpoints" / latest / "COMPLETE").is_file(), output[-3000:]
    return int(latest.removeprefix("step-"))


def test_a_run_moved_between_cluster_shapes_trains_on_the_global_stream_once_in_order(tmp_path):
    data = make_dataset(tmp_path, "text", documents=60)
    config = write_config(tmp_path, data, optim={"total_steps": STEPS},
                          data={"batch_size": BATCH, "micro_batch_size": 2, "num_workers": 1},
                          deepspeed={"zero_stage": 2}, run={"checkpoint_every": 0})
    run_dir = tmp_path / "run"
    first = train_until_sigterm(config, run_dir, 2, [], after=2)
    second = train_until_sigterm(config, run_dir, 1, ["data.num_workers=2"], after=2)
    assert first < second < STEPS
    result = run_training(config, ranks=2)
    assert "ranks 1 → 2" in result.stdout + result.stderr
    steps = identities_by_step(run_dir)
    assert sorted(steps) == list(range(1, STEPS + 1))
    for step, identities in steps.items():  # each step the next BATCH sequences of the stream
        assert sorted(identities) == [(0, k) for k in range((step - 1) * BATCH, step * BATCH)], step
