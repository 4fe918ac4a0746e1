"""`megabyte train`: parse → build → train, cleanup in `finally`.

    megabyte train --config tiny-cpu [--set section.key=value ...]
    deepspeed --num_gpus 8 -m train.main --config configs/text.toml      # the launcher's way
    deepspeed --hostfile hosts -m train.main --config ...                 # several nodes

Rerunning the same command resumes from OUT/checkpoints/latest (model, optimizer, schedule,
RNG and each rank's loader position), so a killed run continues exactly where it stood.
"""

import argparse
import random
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model import build_model
from pipeline.format.errors import UsageError
from pipeline.load.loader import build_train_loader, build_validation_loader
from tools.errors import report_errors
from train import checkpoint
from train.config import ConfigError, TrainConfig, dump_config, load_config
from train.flags import add_train_flags
from train.engine import build_engine, init_distributed
from train.loop import RunState, StopRequest, train_loop
from train.metrics import BatchTrace, MetricsLogger, truncate_jsonl


@dataclass
class Trainer:
    """Everything the loop needs, built once."""

    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    engine: object
    scheduler: object
    train_loader: object
    batches: object  # iterator over train_loader's batches, started by resume() (it never ends)
    validation: object  # () → a fresh validation stream, or None
    metrics: MetricsLogger
    trace: BatchTrace
    out_dir: Path

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="megabyte train", description=__doc__.splitlines()[0])
    add_train_flags(parser)
    return parser.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_validation(config: TrainConfig, rank: int, world_size: int):
    """() → a fresh pass over the validation set, read with the run's [data] settings; or None."""
    if not config.data.validation:
        return None
    return partial(build_validation_loader, config.data, rank, world_size)


def build_trainer(config: TrainConfig, rank: int, world_size: int, device: torch.device) -> Trainer:
    out_dir = Path(config.run.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(dump_config(config) + "\n")
    dist.barrier()
    seed_everything(config.run.seed)  # the same initial weights on every rank
    model = build_model(config.model)
    engine, scheduler = build_engine(model, config, world_size)
    seed_everything(config.run.seed + rank)  # then a different dropout stream per rank
    try:
        train_loader = build_train_loader(config.data, rank, world_size)
    except ValueError as error:  # e.g. a dataset with fewer samples than ranks × workers
        raise ConfigError(f"[data]: {error}") from None
    validation = build_validation(config, rank, world_size)
    return Trainer(config, rank, world_size, device, engine, scheduler, train_loader,
                   None, validation, MetricsLogger(out_dir, rank == 0),
                   BatchTrace(out_dir, rank, config.run.trace_batches), out_dir)


def resume(t: Trainer) -> RunState:
    """Continue from the newest complete checkpoint, if there is one; starts the batches."""
    folder = checkpoint.latest(t.checkpoint_dir)
    if folder is None:
        t.batches = iter(t.train_loader)
        return RunState()
    state = checkpoint.read_state(folder)
    if len(state["loaders"]) != t.world_size:
        raise UsageError(f"{folder}: saved by {len(state['loaders'])} ranks, this run has "
                         f"{t.world_size}; resume with the same world size")
    checkpoint.load_engine(t.engine, folder)
    t.train_loader.load_state_dict(state["loaders"][t.rank])
    t.batches = iter(t.train_loader)
    checkpoint.set_rng_state(state["rngs"][t.rank])
    truncate_jsonl(t.trace.path, state["step"])  # drop the records of steps that will be redone
    if t.rank == 0:
        truncate_jsonl(t.out_dir / "metrics.jsonl", state["step"])
        print(f"resuming from {folder} (step {state['step']})", file=sys.stderr)
    return RunState(step=state["step"], bytes_seen=state["bytes_seen"])


def run(config: TrainConfig) -> dict:
    """Train as `config` says (or resume it); returns the last step's metrics on every rank."""
    rank, world_size, device = init_distributed()
    stop = StopRequest()
    trainer = None
    try:
        config.check_paths()
        trainer = build_trainer(config, rank, world_size, device)
        state = resume(trainer)
        return train_loop(trainer, state, stop)
    finally:
        stop.restore()
        if trainer is not None:
            trainer.metrics.close()
            trainer.trace.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv=None) -> int:
    args = parse_args(argv)
    run(load_config(args.config, args.set))
    return 0


if __name__ == "__main__":
    sys.exit(report_errors("train", main))
