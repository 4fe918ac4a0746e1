"""bench/profile_gpu.py on CPU: one tiny training step, its time split by model part."""

import argparse
import os

import pytest

import forked

from model.flops import count_flops

@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("profile_gpu")


def profile(bench, preset: str, *flags: str):
    args = bench.parse_args(["--preset", preset, "--device", "cpu", "--batch-size", "2", "--warmup", "1",
                             "--set", "seq_len=64", "dropout=0", *flags])
    return args, bench.profile_step(args)


@pytest.fixture(scope="module")
def megabyte(bench):
    return profile(bench, "tiny")


def test_parts_with_flops_are_measured_and_add_up(bench, megabyte):
    args, result = megabyte
    parts = result["parts"]
    with_flops = {bench.PART_OF_FLOPS[name] for name in count_flops(result["config"]).parts}
    assert with_flops == {bench.GLOBAL, bench.LOCAL, bench.EMBED, bench.HEAD}
    for part in with_flops | {bench.OPTIMIZER}:
        assert parts[part] > 0, part
    assert set(parts) <= set(bench.PARTS)
    assert sum(parts.values()) == pytest.approx(result["total"], rel=0.01)


def test_backward_ops_take_their_forward_part(bench, megabyte):
    _, result = megabyte
    backward = result["backward_events"]
    for part in (bench.GLOBAL, bench.LOCAL, bench.EMBED, bench.HEAD):
        assert backward[part] > 0, part
    assert backward[bench.OPTIMIZER] == 0 and backward[bench.OTHER] == 0 and backward[bench.GRADIENTS] == 0


def test_recomputed_blocks_count_as_their_blocks(bench, megabyte):
    """With activation checkpointing each block's forward runs again inside backward, under a
    backward node of that block: those ops go to the blocks too."""
    _, plain = megabyte
    _, checkpointed = profile(bench, "tiny", "--activation-checkpointing")
    assert checkpointed["config"].activation_checkpointing
    for part in (bench.GLOBAL, bench.LOCAL):
        assert checkpointed["backward_events"][part] > plain["backward_events"][part], part
    assert checkpointed["backward_events"][bench.HEAD] == plain["backward_events"][bench.HEAD]


def test_transformer_has_no_local_blocks(bench):
    _, result = profile(bench, "tiny-transformer")
    assert result["parts"][bench.LOCAL] == 0
    assert result["parts"][bench.GLOBAL] > 0 and result["backward_events"][bench.GLOBAL] > 0
    assert sum(result["parts"].values()) == pytest.approx(result["total"], rel=0.01)


def test_report(bench, megabyte, capsys, tmp_path):
    args, result = megabyte
    args = argparse.Namespace(**{**vars(args), "peak_tflops": 1.0})  # CPUs have no peak of their own
    bench.report(args, result)
    out = capsys.readouterr().out
    rows = {line[:26].strip(): line[26:].split() for line in out.splitlines() if line[:26].strip() in bench.PARTS}
    assert set(rows) == set(bench.PARTS)
    ideal_ms = 3 * sum(count_flops(result["config"]).parts.get(name, 0) for name in ("global", "global attention")) \
        * args.batch_size / 1e12 * 1e3
    assert float(rows[bench.GLOBAL][2]) == pytest.approx(ideal_ms, abs=0.01)
    assert rows[bench.OPTIMIZER][2:] == ["n/a", "n/a"]  # no FLOPs counted
    assert "MFU" in out and len(result["top"]) == args.top


@pytest.mark.slow
def test_the_trainer_engine_step_has_zero_gradient_hooks_and_its_optimizer_step(bench):
    """--deepspeed 2: the trainer's engine in a world of one (a process of its own: it joins a
    process group). DeepSpeed's hooks copy each gradient into its buckets inside AccumulateGrad,
    and its step (clipping, AdamW on the flat partition) is the optimizer part."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = forked.start([bench.__file__, "--preset", "tiny", "--device", "cpu", "--batch-size", "2",
                           "--warmup", "1", "--set", "seq_len=64", "dropout=0", "--deepspeed", "2"], env)
    assert result.wait(timeout=300) == 0, result.stderr[-2000:]
    rows = {line[:26].strip(): line[26:].split() for line in result.stdout.splitlines()}
    assert "DeepSpeed ZeRO-2 (the trainer engine)" in result.stdout
    for part in (bench.GLOBAL, bench.LOCAL, bench.OPTIMIZER, bench.GRADIENTS):
        assert float(rows[part][0]) > 0, part
    parts = sum(float(rows[part][0]) for part in bench.PARTS)
    assert parts == pytest.approx(float(rows["total (profiler)"][0]), rel=0.01)
