"""The GPU paths, on CUDA only (skipped elsewhere; bench/gpu.sh runs them on an H100/H200):
bf16 autocast, the flash-attention kernel through SDPA, cached generation on the device (also
through CUDA graphs), compiled blocks, and the trainer with bf16 + fused AdamW + ZeRO-2 in one
process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model import PRESETS, build_model, byte_loss, generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parents[1]


def tiny(architecture: str = "megabyte"):
    torch.manual_seed(0)
    return build_model(PRESETS["tiny" if architecture == "megabyte" else "tiny-transformer"])


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_bf16_forward_and_backward_use_flash_attention(architecture):
    model = tiny(architecture).cuda().eval()  # no dropout: both passes must see the same network
    ids = torch.randint(0, 256, (4, model.config.seq_len), device="cuda")
    with torch.no_grad():
        reference = model(ids).float()
    # only the flash kernel allowed: an unsupported shape or dtype would raise instead of falling back
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids)
        loss = byte_loss(logits, ids)
    loss.backward()
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_cached_generation_on_gpu_matches_cpu(architecture):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = tiny(architecture).double().eval()
    prompts = [b"def main(", b"import "]
    on_cpu = generate(model, prompts, 48, temperature=0)
    on_gpu = generate(model.cuda(), prompts, 48, temperature=0)
    assert on_gpu == on_cpu


@pytest.mark.parametrize("preset", ["tiny", "tiny-cross-patch", "tiny-no-global"])
def test_cuda_graph_decoding_equals_eager_decoding(preset):
    """Real CUDA graphs of MegaByte's local step: the same bytes as eager decoding, past the
    context too (the window slides: new caches, graphs captured again)."""
    torch.manual_seed(0)
    model = build_model(PRESETS[preset]).cuda().eval()
    prompt = torch.randint(0, 256, (2, 13), device="cuda")
    eager = generate(model, prompt, model.config.seq_len + 100, temperature=0, stop_at_boundary=False)
    graphs = generate(model, prompt, model.config.seq_len + 100, temperature=0, stop_at_boundary=False,
                      cuda_graphs=True)
    assert torch.equal(graphs, eager)


@pytest.mark.parametrize("preset", ["tiny", "tiny-cross-patch"])
def test_compiled_blocks_on_gpu_give_the_eager_loss(preset):
    """run.compile with inductor's generated kernels (tests/test_engine.py checks the graphs on a
    CPU without them): bf16 loss and gradients close to eager."""
    from torch._dynamo.utils import counters

    from train.engine import compile_blocks

    torch.manual_seed(0)
    eager = build_model(PRESETS[preset]).cuda().eval()  # no dropout: both must see the same network
    compiled = build_model(PRESETS[preset]).cuda().eval()
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    compile_blocks(compiled)
    counters.clear()
    ids = torch.randint(0, 256, (4, eager.config.seq_len), device="cuda")
    losses = []
    for model in (eager, compiled):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model(ids, loss=True)
        loss.backward()
        losses.append(loss.item())
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert (q.grad - p.grad).norm() <= 0.05 * p.grad.norm(), name


def test_trainer_bf16_zero2_on_one_gpu(tmp_path):
    """Real trainer run: bf16, fused AdamW, ZeRO-2, a checkpoint and its export."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(64):
        (src / f"{i}.py").write_bytes((f"def f{i}(x):\n    return x * {i}\n" * 40).encode())
    env = {**os.environ, "DS_ACCELERATOR": "cuda", "PYTHONUNBUFFERED": "1"}
    run = [sys.executable, "-m", "tools.cli"]
    subprocess.run([*run, "convert", "text", str(src), "--out", str(tmp_path / "data"), "--no-progress"],
                   cwd=REPO, env=env, check=True)
    sets = [f"data.datasets=['{tmp_path / 'data'}']", "data.validation=''", "data.batch_size=8",
            "data.micro_batch_size=8", "data.num_workers=1", "deepspeed.zero_stage=2",
            f"run.out_dir='{tmp_path / 'run'}'", "optim.total_steps=30", "optim.warmup_steps=5",
            "run.log_every=1", "run.progress=false", "run.checkpoint_every=0"]
    result = subprocess.run([*run, "train", "--config", "tiny-cpu", *[f"--set={s}" for s in sets]],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    if any(name in torch.cuda.get_device_name() for name in ("H100", "H200")):
        assert 0 < records[-1]["mfu"] < 1
    assert (tmp_path / "run" / "checkpoints" / "step-000030" / "COMPLETE").exists()
    subprocess.run([*run, "export", str(tmp_path / "run"), "--out", str(tmp_path / "m.safetensors")],
                   cwd=REPO, env=env, check=True)
