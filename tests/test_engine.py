"""train/engine.py with real processes: under ZeRO-3 each of 2 ranks builds only its half of the
model (deepspeed.zero.Init), with the initial weights of the model built whole."""

import json
import subprocess
import sys

from test_train import ENV, REPO, free_port


def rank_memory(stage: int) -> list[dict]:
    """tests/zero_memory.py on 2 ranks: each rank's record, rank 0 first."""
    # glibc keeps freed blocks below its (self-raising) mmap threshold resident: a fixed threshold
    # makes the resident peak what the process holds, not what it once held
    env = {**ENV, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO / "tests" / "zero_memory.py"), "--stage", str(stage)]
    result = subprocess.run(command, cwd=REPO, env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return sorted(records, key=lambda record: record["rank"])


def test_zero3_ranks_build_half_the_model_each_with_the_same_initial_weights():
    whole, partitioned = rank_memory(stage=2), rank_memory(stage=3)
    assert len(whole) == len(partitioned) == 2
    for stage2, stage3 in zip(whole, partitioned):
        assert stage2["parameters"] == stage3["parameters"] > 20_000_000  # 4 bytes each in fp32
        assert stage2["model_peak"] * 1024 > 0.9 * 4 * stage2["parameters"]  # the whole model
        assert stage3["model_peak"] < 0.75 * stage2["model_peak"], (stage2, stage3)  # about half
        assert stage2["same_initial_weights"] and stage3["same_initial_weights"]
