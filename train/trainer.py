"""The Trainer: everything the loop needs, built complete in one call, resumed from the newest
checkpoint if there is one.

    build_trainer: output folder ─▶ newest intact checkpoint (converted by train.reshard if it was
        saved by another number of ranks) ─▶ engine (seeded: the same weights on every rank) ─▶
        per-rank seed ─▶ train loader ─▶ restore every checkpoint part ─▶ batches
"""

import random
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from pipeline.format.errors import UsageError
from pipeline.load.loader import TrainLoader, build_train_loader, build_validation_loader
from pipeline.load.validation import ValidationLoader
from train import checkpoint, reshard
from train.config import ConfigError, TrainConfig, dump_config
from train.engine import EngineState, build_engine
from train.export import MEDIA, data_metadata
from train.metrics import BatchTrace, MetricsLogger, truncate_jsonl
from train.state import RNGState, RunState

if TYPE_CHECKING:  # deepspeed picks its accelerator on import: imported once DS_ACCELERATOR is set
    from deepspeed import DeepSpeedEngine


@dataclass
class Trainer:
    """Everything the loop needs, complete (see build_trainer)."""

    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    engine: "DeepSpeedEngine"  # model, optimizer and lr schedule
    loader: TrainLoader
    batches: Iterator[dict]  # the loader's batches from its current position (never ends)
    validation: Callable[[], ValidationLoader] | None  # () → a fresh validation pass
    run_state: RunState  # step, bytes seen
    metrics: MetricsLogger
    trace: BatchTrace
    media: dict  # the data's modality and converter arguments (train.export.data_metadata)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.run.out_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / checkpoint.CHECKPOINTS

    def checkpoint_config(self) -> dict:
        """What a checkpoint's config.json holds: the resolved config and what the data is, so
        that generate can turn bytes back into media wherever the checkpoint goes."""
        return {**self.config.to_dict(), MEDIA: self.media}

    def checkpoint_parts(self) -> dict[str, checkpoint.Part]:
        return checkpoint_parts(self.engine, self.loader, self.run_state, self.config.run.seed)


def checkpoint_parts(engine: "DeepSpeedEngine", loader: TrainLoader, run_state: RunState,
                     seed: int) -> dict[str, checkpoint.Part]:
    """What a checkpoint holds, in the order it is restored: the RNGs last, so that nothing
    restored after them draws from them (and a rank new to the run seeds them from the step)."""
    return {"engine": EngineState(engine), "loader": loader, "run": run_state,
            "rng": RNGState(seed, run_state)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_out_dir(config: TrainConfig, rank: int) -> Path:
    out_dir = Path(config.run.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(dump_config(config) + "\n")
    check_shared(out_dir, rank)
    return out_dir


def check_shared(out_dir: Path, rank: int) -> None:
    """Every rank must see the files rank 0 writes in out_dir, since all ranks write each
    checkpoint together: on several nodes, one shared folder. Rank 0 leaves a file of a new random
    name there (no earlier run can have left it) and every rank says whether it sees it."""
    name = [f".shared-{secrets.token_hex(8)}" if rank == 0 else None]
    dist.broadcast_object_list(name, src=0)
    probe = out_dir / name[0]
    if rank == 0:
        probe.touch()
    dist.barrier()
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, probe.exists())
    if rank == 0:
        probe.unlink()
    blind = [r for r, sees in enumerate(seen) if not sees]
    if blind:
        raise ConfigError(f"run.out_dir = '{out_dir}': rank(s) {blind} do not see what rank 0 writes "
                          "there; on several nodes it must be one shared folder (NFS, Lustre, ...)")


def build_loader(config: TrainConfig, rank: int, world_size: int) -> TrainLoader:
    try:
        return build_train_loader(config.data, rank, world_size)
    except ValueError as error:  # e.g. a dataset with fewer samples than ranks × workers
        raise ConfigError(f"[data]: {error}") from None


def build_validation(config: TrainConfig, rank: int,
                     world_size: int) -> Callable[[], ValidationLoader] | None:
    """() → a fresh pass over the validation set, read with the run's [data] settings; or None."""
    if not config.data.validation:
        return None
    return partial(build_validation_loader, config.data, rank, world_size)


def resume(folder: Path, config: TrainConfig, parts: dict[str, checkpoint.Part], run_state: RunState,
           trace: BatchTrace, rank: int, world_size: int) -> None:
    """Restore every part from checkpoint `folder`, saying what changed since it was saved, and
    drop the metrics and trace records of the steps that will be redone."""
    checkpoint.load(folder, parts, rank)
    truncate_jsonl(trace.path, run_state.step)
    if rank == 0:
        truncate_jsonl(Path(config.run.out_dir) / "metrics.jsonl", run_state.step)
        print(f"resuming from {folder} (step {run_state.step})", file=sys.stderr)
        change = reshard.describe_change(folder, config, world_size)
        if change:
            print(change, file=sys.stderr)


def choose_checkpoint(root: Path, rank: int) -> Path | None:
    """The newest intact checkpoint (checkpoint.newest_intact), chosen by rank 0 for every rank:
    one reading of the files, and every rank resumes from the same one or fails the same way."""
    choice = [None, None]  # folder name, error
    if rank == 0:
        try:
            folder = checkpoint.newest_intact(root)
            choice[0] = folder.name if folder else None
        except UsageError as error:
            choice[1] = str(error)
    dist.broadcast_object_list(choice, src=0)
    if choice[1] is not None:
        raise UsageError(choice[1])
    return root / choice[0] if choice[0] else None


def build_trainer(config: TrainConfig, rank: int, world_size: int, device: torch.device) -> Trainer:
    """A trainer ready for its next step: new, or where the newest checkpoint left off."""
    out_dir = prepare_out_dir(config, rank)
    folder = choose_checkpoint(out_dir / checkpoint.CHECKPOINTS, rank)
    universal = reshard.prepare(folder, config, rank, world_size)  # saved by another world size
    seed_everything(config.run.seed)  # the same initial weights on every rank
    engine = build_engine(config, world_size, load_universal=universal)
    seed_everything(config.run.seed + rank)  # then a different dropout stream per rank
    loader, run_state = build_loader(config, rank, world_size), RunState()
    trace = BatchTrace(out_dir, rank, config.run.trace_batches)
    if folder is not None:
        parts = checkpoint_parts(engine, loader, run_state, config.run.seed)
        resume(folder, config, parts, run_state, trace, rank, world_size)
    return Trainer(config, rank, world_size, device, engine, loader, iter(loader),
                   build_validation(config, rank, world_size), run_state,
                   MetricsLogger(out_dir, rank == 0), trace, data_metadata(config.data.datasets))
