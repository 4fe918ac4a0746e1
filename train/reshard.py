"""Elastic resume: a checkpoint saved by N ranks continues on M (ZeRO stages 1, 2 and 3).

DeepSpeed's ZeRO files are cut by world size: each rank's file holds its slice of the flat fp32
weights and of Adam's moments. DeepSpeed's universal checkpoint holds them whole instead, a folder
per parameter (deepspeed.checkpoint.ds_to_universal makes one from the ZeRO files), and an engine
of any world size built with "checkpoint": {"load_universal": true} takes its own slice of each.
The step, the lr schedule and the loss scaler come along in DeepSpeed's model-states file, which
the conversion copies.

    checkpoints/step-000200/              saved by 2 ranks: never changed
    checkpoints/universal/step-000200/    its conversion, made once, by rank 0 of the first resume
                                            at another world size (written as .step-000200.tmp,
                                            then renamed); valid with its COMPLETE record, reused
                                            by later resumes, pruned with step-000200

Rank 0 converts while the others wait, so every rank must see the checkpoint folder (one shared
filesystem, as resuming needs anyway). Stage 0 keeps whole copies on every rank: nothing to
convert. Everything else a checkpoint holds is restored per rank by train.checkpoint.load.
"""

import os
import shutil
import sys
from argparse import Namespace
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from pipeline.format.errors import UsageError
from train import checkpoint
from train.config import TrainConfig

if TYPE_CHECKING:  # deepspeed picks its accelerator on import: imported once DS_ACCELERATOR is set
    from deepspeed import DeepSpeedEngine


def universal_folder(folder: Path) -> Path:
    """Where the universal conversion of checkpoint `folder` lives."""
    return folder.parent / checkpoint.UNIVERSAL / folder.name


def needs_universal(folder: Path, config: TrainConfig, world_size: int) -> bool:
    """Whether this run (its config, its world size) must load `folder` through its conversion."""
    saved_ranks = checkpoint.saved_ranks(folder)
    saved_stage = checkpoint.read_config(folder)["deepspeed"]["zero_stage"]
    stage = config.deepspeed.zero_stage
    if saved_ranks == world_size or saved_stage == stage == 0:
        return False
    if 0 in (saved_stage, stage):
        raise UsageError(f"{folder}: saved by {saved_ranks} ranks with ZeRO stage {saved_stage}, this run "
                         f"has {world_size} ranks and stage {stage}: at another world size it needs "
                         f"stage {saved_stage} too; resume with deepspeed.zero_stage = {saved_stage} or "
                         f"on {saved_ranks} ranks")
    return True


def prepare(folder: Path | None, config: TrainConfig, rank: int, world_size: int) -> bool:
    """Collective. Whether the engine must load `folder` through its universal conversion (then
    made by rank 0 if there is none intact yet); False when there is nothing to resume."""
    if folder is None or not needs_universal(folder, config, world_size):
        return False
    error = [None]
    if rank == 0:
        try:
            ensure_conversion(folder)
        except UsageError as problem:
            error[0] = str(problem)
    dist.broadcast_object_list(error, src=0)  # the others wait here for the conversion
    if error[0] is not None:
        raise UsageError(error[0])
    return True


def ensure_conversion(folder: Path) -> Path:
    """The intact universal conversion of `folder`: the one made before, or a new one."""
    target = universal_folder(folder)
    if (target / checkpoint.MARKER).is_file():
        problem = checkpoint.damage(target)
        if problem is None:
            return target
        print(f"{target}: broken conversion ({problem}): converting again", file=sys.stderr)
    convert(folder, target)
    return target


def convert(folder: Path, target: Path) -> None:
    """ZeRO files of `folder` → a universal checkpoint at `target`, written under a temporary name
    and renamed once complete (with its COMPLETE record); `folder` itself is only read."""
    from deepspeed.checkpoint import ds_to_universal

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an interrupted conversion
    print(f"{folder}: saved by {checkpoint.saved_ranks(folder)} ranks; converting it to DeepSpeed's "
          f"universal checkpoint in {target}", file=sys.stderr)
    arguments = Namespace(input_folder=str(folder), output_folder=str(tmp), num_extract_workers=1,
                          num_merge_workers=1, keep_temp_folder=False, strict=True,
                          inject_missing_state=True)  # ours has no tensor-parallel layout to record
    try:
        with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
            ds_to_universal.main(arguments)  # its progress prints and bars are noise here
        (tmp.parent / "latest_universal").unlink(missing_ok=True)  # names tmp; we pass tags instead
        checkpoint.write_marker(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a broken earlier conversion
        tmp.replace(target)
    except OSError as error:  # e.g. the disk is full
        raise UsageError(f"{folder}: cannot convert it for another world size "
                         f"({error.strerror or error}); the checkpoint itself is unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def repair_universal_load(engine: "DeepSpeedEngine", conversion: Path) -> None:
    """After a universal load, undo what DeepSpeed 0.19's ZeRO-3 load gets wrong with more than
    one parameter group (ours: with and without weight decay); harmless for stages 1 and 2:
    - it gives every group the settings of the first (the no-decay group a weight decay): each
      group gets its own back, as saved;
    - it hands every group one and the same step tensor, which torch's Adam then advances once
      per group and step (bias correction of step 4 after step 3): each group gets its own copy."""
    saved = torch.load(conversion / "zero" / "optimizer_state.pt", map_location="cpu",
                       weights_only=False)["param_groups"]  # trusted as every resumed file is
    optimizer = engine.optimizer.optimizer
    for group, saved_group in zip(optimizer.param_groups, saved, strict=True):
        group.update({key: value for key, value in saved_group.items() if key != "params"})
    for state in optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


def describe_change(folder: Path, config: TrainConfig, world_size: int) -> str | None:
    """One line saying what a resume changes against the run that saved `folder` (ranks, gradient
    accumulation, micro-batch, global batch, loader workers), or None when nothing."""
    data = checkpoint.read_config(folder).get("data")
    if data is None:  # a config without [data] says nothing of how the run cut its batches
        return None
    saved = batch_layout(data["batch_size"], data["micro_batch_size"], data["num_workers"],
                         checkpoint.saved_ranks(folder))
    now = batch_layout(config.data.batch_size, config.data.micro_batch_size, config.data.num_workers,
                       world_size)
    changes = [f"{name} {saved[name]} → {now[name]}" for name in saved if saved[name] != now[name]]
    if not changes:
        return None
    if saved["global batch"] == now["global batch"]:
        changes.append(f"global batch {now['global batch']} (unchanged)")
    return "resuming with " + ", ".join(changes)


def batch_layout(batch_size: int, micro_batch_size: int, workers: int, ranks: int) -> dict[str, int]:
    """How a run cuts its optimizer steps (batch_size 0: one micro-batch per rank)."""
    accumulation = max(1, batch_size // (micro_batch_size * ranks))
    return {"ranks": ranks, "gradient accumulation": accumulation, "micro-batch": micro_batch_size,
            "global batch": micro_batch_size * ranks * accumulation, "loader workers per rank": workers}
