"""One run of tests/test_elastic.py, on as many ranks as torchrun starts (or one, run plainly).

The trainer's own engine, checkpoint parts and resume path (train.trainer.choose_checkpoint,
train.reshard.prepare, train.checkpoint.load) on synthetic batches instead of the loader: global
batch k is the same rows at every world size, rank r taking micro-batches r, r + W, r + 2W, ...
of it, so a run's losses do not depend on how many ranks share the batch.

    python tests/elastic_run.py --config C.toml --until 4 [--save-every 2] [--dump-resumed DIR]

Trains from the newest checkpoint in OUT/checkpoints (or from scratch) up to step --until, saving
every --save-every steps and at the end; appends each step's {"step", "loss", "world_size", "lr",
"weight_decay"} (the last two per parameter group) to OUT/losses.jsonl; --dump-resumed saves the
state just restored, untouched, to DIR (a checkpoints root), to compare with what was saved.
"""

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist

from model import byte_loss
from train import checkpoint, reshard
from train.config import load_config
from train.engine import EngineState, build_engine, init_distributed
from train.state import RNGState, RunState
from train.trainer import choose_checkpoint, seed_everything


def global_batch(step: int, rows: int, seq_len: int) -> torch.Tensor:
    """Rows counting up from a random start: learnt within a few steps, so losses move."""
    generator = torch.Generator().manual_seed(1000 + step)
    starts = torch.randint(0, 32, (rows, 1), generator=generator)
    return (starts + torch.arange(seq_len)) % 32  # (G, T)


def train_step(engine, step: int, config, rank: int, world_size: int) -> float:
    """One optimizer step on global batch `step`; the mean loss over all its micro-batches."""
    micro, accumulation = config.data.micro_batch_size, engine.gradient_accumulation_steps()
    batch = global_batch(step, config.data.batch_size, config.model.seq_len)  # (G, T)
    total = torch.zeros(1, dtype=torch.float64)
    for i in range(accumulation):
        start = (i * world_size + rank) * micro
        ids = batch[start:start + micro]  # (micro, T)
        loss = byte_loss(engine(ids), ids)
        engine.backward(loss)
        engine.step()
        total += loss.detach().double()
    dist.all_reduce(total)
    return total.item() / (accumulation * world_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--until", type=int, required=True)
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--dump-resumed", type=Path, default=None)
    args = parser.parse_args()

    rank, world_size, _ = init_distributed()
    config = load_config(args.config, args.set)
    out_dir = Path(config.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = choose_checkpoint(out_dir / "checkpoints", rank)
    universal = reshard.prepare(folder, config, rank, world_size)
    seed_everything(config.run.seed)
    engine = build_engine(config, world_size, load_universal=universal)
    seed_everything(config.run.seed + rank)
    run_state = RunState()
    parts = {"engine": EngineState(engine), "run": run_state, "rng": RNGState(config.run.seed, run_state)}
    if folder is not None:
        checkpoint.load(folder, parts, rank)
        if args.dump_resumed:
            checkpoint.save(args.dump_resumed, run_state.step, parts, config.to_dict(), keep_last=1)
    while run_state.step < args.until:
        loss = train_step(engine, run_state.step, config, rank, world_size)
        run_state.step += 1
        if rank == 0:
            groups = engine.optimizer.optimizer.param_groups
            record = {"step": run_state.step, "loss": loss, "world_size": world_size,
                      "lr": [group["lr"] for group in groups],
                      "weight_decay": [group["weight_decay"] for group in groups]}
            with open(out_dir / "losses.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        every = args.save_every
        if run_state.step == args.until or (every and run_state.step % every == 0):
            checkpoint.save(out_dir / "checkpoints", run_state.step, parts, config.to_dict(), keep_last=5)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
