"""train/engine.py: under ZeRO-3 each of 2 ranks (real processes) builds only its half of the
model (deepspeed.zero.Init), with the initial weights of the model built whole; run.compile's
blocks compile to whole graphs that compute what the eager model does."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from model import MegaByteConfig, build_model
from helpers import ENV, REPO, free_port
from train.engine import compile_blocks


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


@pytest.mark.slow
def test_zero3_ranks_build_half_the_model_each_with_the_same_initial_weights():
    whole, partitioned = rank_memory(stage=2), rank_memory(stage=3)
    assert len(whole) == len(partitioned) == 2
    for stage2, stage3 in zip(whole, partitioned):
        assert stage2["parameters"] == stage3["parameters"] > 20_000_000  # 4 bytes each in fp32
        assert stage2["model_peak"] * 1024 > 0.9 * 4 * stage2["parameters"]  # the whole model
        assert stage3["model_peak"] < 0.75 * stage2["model_peak"], (stage2, stage3)  # about half
        assert stage2["same_initial_weights"] and stage3["same_initial_weights"]


@pytest.mark.parametrize("fields", [dict(), dict(local_cross_patch=4, activation_checkpointing=True),
                                    dict(architecture="transformer", patch_size=1, local_layers=0)])
def test_compiled_blocks_are_whole_graphs_with_the_eager_loss_and_gradients(fields):
    """run.compile: each block shape is one graph (no break, e.g. at the attention) and the step
    computes what the eager model does. The aot_eager backend traces exactly as inductor's
    compilation does, without generating kernels (minutes on a CPU)."""
    torch.manual_seed(0)
    config = MegaByteConfig(**{**dict(seq_len=32, patch_size=4, global_dim=32, global_layers=2, global_heads=2,
                                      local_dim=16, local_layers=2, local_heads=2, dropout=0.0), **fields})
    eager = build_model(config).train()
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()  # no graph left from another test: each one here is traced anew
    compile_blocks(compiled, backend="aot_eager")
    counters.clear()
    ids = torch.randint(0, 256, (2, 32))
    losses = []
    for model in (eager, compiled):
        loss, _ = model(ids, loss=True)
        loss.backward()
        losses.append(loss.detach())
    assert not counters["graph_break"], dict(counters["graph_break"])
    shapes = 1 if config.architecture == "transformer" else 2  # global blocks, local blocks
    assert counters["stats"]["unique_graphs"] == shapes
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6, msg=name)
