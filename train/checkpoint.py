"""Checkpoints: DeepSpeed's engine state plus ours, in OUT/checkpoints/step-NNNNNN/.

    step-000200/
      <DeepSpeed's files>       model, optimizer (ZeRO partitions), lr schedule
      trainer_state.pt          step, bytes seen, each rank's loader state and RNG states, config
      COMPLETE                  written last: a folder without it is an interrupted save, ignored
    latest                      name of the newest complete checkpoint, replaced atomically

Every rank takes part in a save (ZeRO partitions live on every rank); rank 0 writes our files
after a barrier, so COMPLETE exists only once every rank has written its part.
"""

import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

MARKER = "COMPLETE"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def save(engine, root: Path, step: int, loader_state: dict, extra: dict, keep_last: int) -> Path:
    """Save everything needed to continue exactly after optimizer step `step`."""
    root = Path(root)
    tag = f"step-{step:06d}"
    loaders, rngs = gather(loader_state), gather(rng_state())
    if dist.get_rank() == 0 and (root / tag).exists():  # a leftover of an interrupted save
        shutil.rmtree(root / tag)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    dist.barrier()
    if dist.get_rank() == 0:
        state = {"step": step, "loaders": loaders, "rngs": rngs, **extra}
        torch.save(state, root / tag / TRAINER_STATE)
        (root / tag / MARKER).write_text("ok\n")
        tmp = root / f".{LATEST}.tmp"
        tmp.write_text(tag + "\n")
        tmp.replace(root / LATEST)
        prune(root, keep_last)
    dist.barrier()
    return root / tag


def complete_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).glob("step-*") if (p / MARKER).is_file())


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; drop older and interrupted ones."""
    complete = complete_checkpoints(root)
    keep = set(complete[-keep_last:]) if keep_last > 0 else set(complete)
    newest = complete[-1] if complete else None
    for folder in Path(root).glob("step-*"):
        if folder not in keep and (folder in complete or newest and folder.name < newest.name):
            shutil.rmtree(folder, ignore_errors=True)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under root (the `latest` pointer, checked), or None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if (folder / MARKER).is_file():
            return folder
    complete = complete_checkpoints(root)
    return complete[-1] if complete else None


def read_state(folder: Path) -> dict:
    """Our trainer state of a checkpoint: step, bytes seen, loaders, RNGs, config."""
    return torch.load(Path(folder) / TRAINER_STATE, weights_only=False)


def load_engine(engine, folder: Path) -> None:
    """Restore model, optimizer and schedule from a checkpoint folder."""
    folder = Path(folder)
    load_path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name)
    if load_path is None:
        raise RuntimeError(f"{folder}: DeepSpeed could not load this checkpoint")
