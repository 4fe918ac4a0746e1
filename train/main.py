"""`megabyte train`: parse → build → train, cleanup in `finally`.

    megabyte train --config tiny-cpu [--set section.key=value ...]
    deepspeed --num_gpus 8 -m train.main --config text       # the launcher's way
    deepspeed --hostfile hosts -m train.main --config text   # several nodes (docs/training.md)

--config takes a shipped name (train/configs/NAME.toml) or the path of a TOML file.

Rerunning the same command resumes from OUT/checkpoints/latest (model, optimizer, schedule,
RNG and the loader's position in the global data order), so a killed run continues exactly where
it stood, on the same or another number of ranks.
"""

import argparse
import sys

import torch.distributed as dist

from pipeline.format.errors import report_errors
from train.allocator import return_freed_memory
from train.config import TrainConfig, load_config
from train.engine import init_distributed
from train.flags import add_train_flags
from train.loop import StopRequest, train_loop
from train.trainer import build_trainer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="megabyte train", description=__doc__.splitlines()[0])
    add_train_flags(parser)
    return parser.parse_args(argv)


def run(config: TrainConfig) -> dict:
    """Train as `config` says (or resume it); returns the last step's metrics on every rank."""
    rank, world_size, device = init_distributed()
    if device.type == "cpu":
        return_freed_memory(config.model.seq_len)  # a long sequence's freed buffers go back to the system
    stop = StopRequest()
    trainer = None
    try:
        config.check_paths()
        trainer = build_trainer(config, rank, world_size, device)
        return train_loop(trainer, stop)
    finally:
        stop.restore()
        if trainer is not None:
            trainer.batches.close()  # shuts the loader's workers down
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
