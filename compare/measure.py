"""One trained trial → its scores; a run's best trial → the rest of its figures.

score_trial, for every trial (each setting of a sweep, each seed):
    parameters, flops_per_byte   the model (flops_per_byte: training FLOPs per predicted byte)
    steps, bytes_trained         optimizer steps done × positions per step (what the FLOPs count)
    flops_spent                  steps × FLOPs per step
    seed                         the trial's run.seed
    wall_seconds                 the trainer processes' wall time, start-up and in-run validations
                                 included (every launch, when the trial was resumed)
    train_bytes_per_s            the trainer's own figure (targets per second of a step), averaged
                                 over its logged steps
    loss_rise, loss_rise_step    the largest rise of the training loss (bits per byte) above its
                                 lowest point before, and the step it peaked at: a spike
    bpb                          `megabyte eval` on every byte of the validation set, plain windows
    mean_patch_bytes,            SpaceByte only: on the validation set's plain windows, the bytes
    untrained_fraction           per patch and the share of them past the global positions (left
                                 out of training; train/windows.py patch_statistics)
measure_best, for the trial a run's summary stands for (compare/sweep.py):
    bpb_strided, bpb_sliding_S   the same bytes strided (patched models) and sliding (PerceiverAR's
                                 own evaluation)
    generate_bytes_per_s         sampling generate_bytes bytes with batch 1 from an empty prompt:
                                 the median of generate_repeats timings
    generate_load                the machine's load average (1 minute) after the timings; a figure
                                 taken with a load above the cores is flagged in results.md
"""

import os
import statistics
import time

import torch

from compare.plan import RunPlan
from compare.suite import RunSpec, Suite
from compare.wall import wall_seconds
from model import generate
from model.config import PATCHED
from train.export import export, load_any
from train.metrics import read_metrics
from train.windows import dataset_ids, dataset_streams, eval_modes, evaluate_streams, patch_statistics

EVAL_BATCH = 8  # windows per forward


def pick(device=None) -> torch.device:
    return device or torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trained_model(suite: Suite, trial: RunSpec, device: torch.device):
    """The trial's newest checkpoint, exported once (OUT/runs/TRIAL/model.safetensors) and loaded."""
    weights = suite.run_dir(trial) / "model.safetensors"
    if not weights.is_file():
        export(suite.run_dir(trial), weights)
    model, metadata = load_any(weights)
    return model.to(device), metadata.get("image_order", "raster")


def score_trial(suite: Suite, trial: RunSpec, plan: RunPlan, device=None) -> dict:
    run_dir, device = suite.run_dir(trial), pick(device)
    model, image_order = trained_model(suite, trial, device)
    config = model.config
    train_records = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    steps = train_records[-1]["step"]
    result = {"name": trial.name, "preset": trial.preset, "architecture": config.architecture,
              "seq_len": config.seq_len, "patch_size": config.patch_size,
              "parameters": sum(p.numel() for p in model.parameters()),
              "flops_per_byte": plan.flops_per_byte, "steps": steps, "seed": suite.train_config(trial, steps).run.seed,
              "bytes_trained": steps * plan.positions_per_step, "flops_spent": steps * plan.flops_per_step,
              "wall_seconds": wall_seconds(run_dir),
              "train_bytes_per_s": sum(r["bytes_per_s"] for r in train_records) / len(train_records),
              **loss_rise(train_records)}
    [plain] = eval_modes(config, strided=False, sliding=None)[:1]
    result["bpb"] = evaluate(model, suite.validation, [plain], image_order, device)["bpb"]
    if config.architecture == "spacebyte":
        result.update(patch_statistics(model, dataset_streams(suite.validation, config, image_order)))
    return result


def loss_rise(train_records: list[dict]) -> dict:
    """{"loss_rise": the largest rise of the logged training bits per byte above the lowest logged
    before it, "loss_rise_step": the step of that peak} (0 and the first step: it never rose)."""
    lowest, rise, step = float("inf"), 0.0, train_records[0]["step"]
    for record in train_records:
        if record["bpb"] - lowest > rise:
            rise, step = record["bpb"] - lowest, record["step"]
        lowest = min(lowest, record["bpb"])
    return {"loss_rise": rise, "loss_rise_step": step}


def measure_best(suite: Suite, trial: RunSpec, device=None) -> dict:
    """The other evaluations of every byte (strided, sliding) and the generation speed."""
    device = pick(device)
    model, image_order = trained_model(suite, trial, device)
    config = model.config
    strided = config.architecture in PATCHED and config.patch_size >= 2
    others = eval_modes(config, strided=strided, sliding=None)[1:]  # plain was scored with the trial
    result = evaluate(model, suite.validation, others, image_order, device) if others else {}
    timings = [generation_seconds(model, suite.generate_bytes) for _ in range(suite.generate_repeats)]
    result["generate_bytes_per_s"] = suite.generate_bytes / statistics.median(timings)
    result["generate_load"] = os.getloadavg()[0]
    return result


def evaluate(model, validation: str, modes: list, image_order: str, device) -> dict:
    """{"bpb": plain, "bpb_strided": ..., "bpb_sliding_S": ...} of `modes` over every byte of the set."""
    streams = lambda: dataset_streams(validation, model.config, image_order)  # noqa: E731 (afresh per mode)
    scores = evaluate_streams(model, streams, modes, device, EVAL_BATCH, total_ids=dataset_ids(validation))
    return {"bpb" if name == "plain" else f"bpb_{name.replace(' ', '_')}": score["bpb"]
            for name, score in scores.items()}


def generation_seconds(model, count: int) -> float:
    """Seconds sampling `count` bytes (batch 1, temperature 1, no early stop)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    [new] = generate(model, [b""], count, seed=0, stop_at_boundary=False, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert len(new) == count  # no early stop: every byte is timed
    return time.perf_counter() - started
