"""One trained run → its result: what it cost, how well it models the validation set, how fast.

    parameters, flops_per_byte   the model (flops_per_byte: training FLOPs per predicted byte)
    steps, bytes_trained         optimizer steps done × positions per step (what the FLOPs count)
    flops_spent                  steps × FLOPs per step
    wall_seconds                 the trainer processes' wall time, start-up and in-run validations
                                 included (every launch, when the run was resumed)
    train_bytes_per_s            the trainer's own figure (targets per second of a step), averaged
                                 over its logged steps
    bpb, bpb_strided, ...        `megabyte eval` on every byte of the validation set: plain windows,
                                 strided (patched models) and sliding (PerceiverAR's own evaluation)
    generate_bytes_per_s         sampling generate_bytes bytes with batch 1 from an empty prompt
"""

import time

import torch

from compare.plan import RunPlan
from compare.suite import RunSpec, Suite
from compare.wall import wall_seconds
from model import generate
from model.config import PATCHED
from train.export import export, load_any
from train.metrics import read_metrics
from train.windows import dataset_streams, eval_modes, evaluate_streams

EVAL_BATCH = 8  # windows per forward


def measure_run(suite: Suite, run: RunSpec, plan: RunPlan, device=None) -> dict:
    run_dir = suite.run_dir(run)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights = run_dir / "model.safetensors"
    export(run_dir, weights)
    model, metadata = load_any(weights)
    model.to(device)
    config = model.config
    train_records = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    steps = train_records[-1]["step"]
    result = {"name": run.name, "preset": run.preset, "architecture": config.architecture,
              "seq_len": config.seq_len, "patch_size": config.patch_size,
              "parameters": sum(p.numel() for p in model.parameters()),
              "flops_per_byte": plan.flops_per_byte, "steps": steps,
              "bytes_trained": steps * plan.positions_per_step, "flops_spent": steps * plan.flops_per_step,
              "wall_seconds": wall_seconds(run_dir),
              "train_bytes_per_s": sum(r["bytes_per_s"] for r in train_records) / len(train_records)}
    print(f"{run.name}: evaluating on every byte of {suite.validation}", flush=True)
    result.update(validation_bpb(model, suite.validation, metadata.get("image_order", "raster"), device))
    result["generate_bytes_per_s"] = generation_speed(model, suite.generate_bytes)
    return result


def validation_bpb(model, validation: str, image_order: str, device) -> dict:
    """{"bpb": plain, "bpb_strided": ..., "bpb_sliding_S": ...} over every byte of the set."""
    config = model.config
    strided = config.architecture in PATCHED and config.patch_size >= 2
    modes = eval_modes(config, strided=strided, sliding=None)
    streams = lambda: dataset_streams(validation, config, image_order)  # noqa: E731 (afresh per mode)
    scores = evaluate_streams(model, streams, modes, device, EVAL_BATCH)
    return {"bpb" if name == "plain" else f"bpb_{name.replace(' ', '_')}": score["bpb"]
            for name, score in scores.items()}


def generation_speed(model, count: int) -> float:
    """Bytes per second sampling `count` bytes (batch 1, temperature 1, no early stop)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    [new] = generate(model, [b""], count, seed=0, stop_at_boundary=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(new) / (time.perf_counter() - started)
