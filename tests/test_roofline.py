"""bench/roofline.py and bench/roofline_generate.py: the kernels of a training step and of
generation on the meta device, their parts, FLOPs and bytes."""

import sys
from collections import Counter
from unittest import mock

import pytest
import torch

from model.flops import count_flops

BATCH = 2


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("roofline")


def step(bench, *settings: str, checkpointing: bool = False):
    """(config, Counter (part, op) → FLOPs, the kernels) of one tiny step."""
    config = bench.load_config("tiny", ["seq_len=64", "dropout=0", *settings], checkpointing)
    kernels = bench.record_step(config, BATCH)
    flops = Counter()
    for part, name, count, _ in kernels:
        flops[part, name] += count
    return config, flops, kernels


def dense(flops: Counter, part: str) -> float:
    return flops[part, "mm"] + flops[part, "addmm"]


def test_views_launch_no_kernel_and_copies_do(bench):
    aten = torch.ops.aten
    for op in (aten.view.default, aten.transpose.int, aten.expand.default, aten._unsafe_view.default,
               aten.split.Tensor, aten.detach.default):
        assert not bench.launches_kernel(op), op
    for op in (aten.add.Tensor, aten.add_.Tensor, aten.copy_.default, aten.clone.default, aten.mm.default,
               aten._fused_adamw_.default):
        assert bench.launches_kernel(op), op


def test_bytes_read_and_written_once_each(bench):
    recorder = bench.KernelRecorder(parts=type("Parts", (), {"current": lambda self: "x"})())
    with torch.device("meta"):
        a, b = torch.empty(1000), torch.empty(1000)
        row = torch.empty(1, 1000)
        half = torch.empty(1000, dtype=torch.bfloat16)
    with recorder:
        a + b  # reads 2 × 4000, writes 4000
        a.add_(b)  # reads a and b, writes a
        row.expand(8, 1000) * 2  # the broadcast row is read once; the output is 8 rows
        a.copy_(half)  # the destination is written, not read
        a + a  # one tensor read once
    assert [nbytes for *_, nbytes in recorder.kernels] == [12000, 12000, 4000 + 32000, 2000 + 4000, 8000]


def test_products_land_in_their_parts_with_model_flops(bench):
    """Every product of the step, forward and backward, counted in its part: 3 × the forward
    FLOPs of model/flops.py (the fused loss computes the head's logits again in backward: 4 ×)."""
    config, flops, _ = step(bench)
    forward = {name: BATCH * count for name, count in count_flops(config).parts.items()}
    assert dense(flops, bench.PARTS[0]) == 3 * forward["global"]  # global blocks
    assert dense(flops, "local blocks") == 3 * forward["local"]
    assert dense(flops, "embeddings and handover") == 3 * forward["global to local"]
    assert dense(flops, "head and loss") == 4 * forward["head"]
    # causal flash attention: the kernel's FLOPs are model/flops.py's (S+1)/2 keys per query
    assert flops["global blocks", "_scaled_dot_product_flash_attention"] == pytest.approx(forward["global attention"])
    assert flops["local blocks", "_scaled_dot_product_flash_attention"] == pytest.approx(forward["local attention"])


def test_every_kernel_has_a_part(bench):
    _, _, kernels = step(bench)
    parts = Counter(part for part, *_ in kernels)
    assert set(parts) <= set(bench.PARTS)
    assert parts["other"] == 1  # the seed of backward, d loss / d loss = 1
    assert parts["optimizer"] > 0 and parts["embeddings and handover"] > 0


def test_checkpointing_recomputes_the_blocks_forward(bench):
    """Backward runs each block's forward again, up to its last saved tensor (torch.utils.checkpoint
    stops early): all of it but the MLP's output projection, whose output nothing saves."""
    config, flops, _ = step(bench, checkpointing=True)
    forward = {name: BATCH * count for name, count in count_flops(config).parts.items()}
    last_product = config.mlp_ratio / (4 + 2 * config.mlp_ratio)  # its share of a block's products
    assert dense(flops, "global blocks") == (4 - last_product) * forward["global"]
    assert dense(flops, "local blocks") == (4 - last_product) * forward["local"]


def test_cross_patch_attention_runs_the_masked_kernel(bench):
    _, flops, kernels = step(bench, "local_cross_patch=2")
    names = Counter(name for part, name, *_ in kernels if part == "local blocks")
    forward, backward = "_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward"
    assert names[forward] == names[backward] > 0
    assert names["_scaled_dot_product_flash_attention"] == 0


def test_matmul_attention_moves_more_bytes_than_flash(bench):
    """The plain-matmul local attention writes its (N, nh, P, P) scores; the flash kernel does not."""
    moved = {}
    for kernel in ("sdpa", "matmul"):
        _, _, kernels = step(bench, f"local_attention={kernel}")
        moved[kernel] = sum(nbytes for part, _, _, nbytes in kernels if part == "local blocks")
    assert moved["matmul"] > moved["sdpa"]


def test_report_prints_the_mfu_ceiling(bench, capsys):
    args = bench.parse_args(["--preset", "tiny", "--set", "seq_len=64", "--batch-size", str(BATCH), "--gpu", "H200"])
    config = bench.load_config(args.preset, args.set, args.activation_checkpointing)
    rows = bench.roofline(bench.record_step(config, BATCH), 989e12, 4.8e12)
    bench.report(args, config, rows)
    out = capsys.readouterr().out
    assert "MFU ≤" in out and "global blocks" in out and "H200: 989 TFLOP/s, 4.8 TB/s" in out
    bound = sum(row["bound"] for row in rows.values())
    assert bound >= sum(row["compute"] for row in rows.values())
    assert bound >= sum(row["memory"] for row in rows.values())


@pytest.fixture(scope="module")
def generation(load_bench):
    return load_bench("roofline_generate")


@pytest.mark.parametrize("name", ["tiny", "tiny-transformer"])
def test_loop_windows_are_those_of_the_generation_loop(generation, name):
    """The prefills (window length, max_len) and decode steps (window length) that generate_ids
    makes, spied on a real tiny model, are the ones loop_windows predicts without one."""
    from model import PRESETS, build_model
    from model.generate import generate_ids

    torch.manual_seed(0)
    model = build_model(PRESETS[name]).eval()
    prefills, contexts = [], []
    prefill, decode_step = model.prefill, model.decode_step

    def spy_prefill(ids, max_len, **kwargs):
        prefills.append((ids.shape[1], max_len))
        return prefill(ids, max_len, **kwargs)

    def spy_decode(next_ids, state):
        contexts.append(state["length"] + 1)  # the window's bytes once next_ids is read
        return decode_step(next_ids, state)

    new_bytes = 700  # past the 512-byte context: the window slides
    with mock.patch.object(model, "prefill", spy_prefill), mock.patch.object(model, "decode_step", spy_decode):
        generate_ids(model, torch.zeros(1, 0, dtype=torch.long), new_bytes, temperature=0, stop_at_boundary=False)
    expected_prefills, expected_contexts = generation.loop_windows(model.config.seq_len, model.config.patch_size,
                                                                   new_bytes)
    assert prefills == expected_prefills and len(prefills) > 1
    assert contexts == expected_contexts


def test_the_mean_step_stands_for_the_whole_loop(generation, bench):
    """Per generated byte, the estimate (prefills + mean-context decode steps) against every kernel
    of generate_ids on the meta device, part by part (the loop's own sampling is left out)."""
    from model import PRESETS, MegaByteConfig, build_model
    from model.generate import generate_ids

    new_bytes = 150  # past the context: two slides
    for name in ("tiny", "tiny-transformer"):
        config = MegaByteConfig.from_dict({**PRESETS[name].to_dict(), "seq_len": 64})
        estimate = generation.per_byte(generation.record_loop(config, 2, new_bytes), 989e12, 4.8e12)
        with torch.device("meta"):
            model = build_model(config).to(torch.bfloat16).eval()
        recorder = bench.KernelRecorder(bench.PartTracker(model))
        with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", bench.cuda_attention), recorder:
            generate_ids(model, torch.zeros(2, 0, dtype=torch.long, device="meta"), new_bytes, temperature=0,
                         stop_at_boundary=False)
        whole = generation.per_byte([(*kernel, 1 / (2 * new_bytes)) for kernel in recorder.kernels], 989e12, 4.8e12)
        for part in ("global blocks", "local blocks", "head and loss"):
            if part not in whole:
                continue
            for key in ("kernels", "flops", "bytes", "bound"):
                assert estimate[part][key] == pytest.approx(whole[part][key], rel=0.01), (name, part, key)


def test_generation_report_compares_the_two_models(generation, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["roofline_generate.py", "--megabyte", "tiny", "--transformer",
                                      "tiny-transformer", "--new-bytes", "64", "--batch-sizes", "1", "--gpu", "H200"])
    generation.main()
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("tiny")}
    assert set(rows) == {"tiny", "tiny-transformer"}
    assert float(rows["tiny-transformer"][-1]) == 1.0  # the transformer over itself
    speed = {name: float(row[6].replace(",", "")) for name, row in rows.items()}  # roofline bytes/s
    assert float(rows["tiny"][-1]) == pytest.approx(speed["tiny"] / speed["tiny-transformer"], abs=0.01)
