"""End-to-end training throughput from shards vs. the same engine on in-memory batches.

For each model (MegaByte and the equal-size baseline) one engine is built and timed twice with the
trainer's own loop (its per-step timer, median over the timed steps):

  from shards   loader (workers, decompression, packing) + model + DeepSpeed step
  in memory     the same engine fed batches already in memory (the data path removed)

The ratio shards / in-memory should be >= 0.95: the data path must never be the bottleneck. On a
GPU it also prints model FLOPs utilisation (bf16 peak of the card).

    python bench/train.py                                   # tiny models, CPU, a few minutes
    python bench/train.py --preset gpu-350m --steps 30      # ~350M models, bf16, ZeRO-2, one GPU
"""

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

# the repository first: this file, bench/train.py, would otherwise shadow the package `train`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train.loop  # noqa: E402
from common import machine as machine_line, parse_setting  # noqa: E402  (bench/: this runs as a script)
from pipeline.convert.driver import ConvertOptions, convert  # noqa: E402
from pipeline.convert.text import TextConverter  # noqa: E402
from pipeline.convert.stdlib import stdlib_sources  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.engine import init_distributed  # noqa: E402
from train.loop import StopRequest, train_loop  # noqa: E402
from train.state import RunState  # noqa: E402
from train.trainer import build_trainer  # noqa: E402
from train.metrics import MetricsLogger, read_metrics  # noqa: E402

train.loop.save = lambda t: None  # the loop's final checkpoint is not what is measured

# model sections: name → (MegaByte, baseline of about the same parameter count)
MODELS = {
    "tiny": ({"preset": "tiny"}, {"preset": "tiny-transformer"}),
    # ~350M each: global 1280 × 16 (P = 8) + local 512 × 8, and a 1024 × 28 baseline, T = 8192;
    # GELU, std 0.02 and no cross-patch attention: the models BENCHMARKS.md measured before the
    # paper presets took ReLU, std 0.006 and r = P
    "gpu-350m": ({"preset": "text", "seq_len": 8192, "patch_size": 8, "global_dim": 1280,
                  "global_layers": 16, "global_heads": 10, "local_dim": 512, "local_layers": 8,
                  "local_heads": 4, "dropout": 0.0, "local_cross_patch": 0, "activation": "gelu",
                  "init_std": 0.02},
                 {"preset": "text-transformer", "seq_len": 8192, "global_dim": 1024,
                  "global_layers": 28, "global_heads": 8, "dropout": 0.0, "activation": "gelu",
                  "init_std": 0.02}),
    # Table 13's best split, global 1.3B (2048 × 24) + local 218M (1024 × 15), P = 8, and a 1.4B
    # baseline (2048 × 28), T = 8192; run under ZeRO-3 with activation checkpointing
    "gpu-table13": ({"preset": "text-split-1.3b", "dropout": 0.0, "activation_checkpointing": True},
                    {"preset": "text-transformer", "seq_len": 8192, "global_dim": 2048, "global_layers": 28,
                     "global_heads": 32, "dropout": 0.0, "activation_checkpointing": True}),
}


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return machine_line(f"torch {torch.__version__}")


def make_data(folder: Path) -> Path:
    _, files = stdlib_sources()
    out = folder / "stdlib"
    convert(TextConverter(), files, ConvertOptions(out=out, name="stdlib", workers=2, progress=False),
            {"modality": "text"})
    return out


def timed_run(t, steps: int, warmup: int, run_dir: Path) -> tuple[float, float | None]:
    """Median bytes/s (and MFU) of the loop's own per-step figures, after `warmup` steps."""
    t.config.optim.total_steps = warmup + steps
    run_dir.mkdir(parents=True, exist_ok=True)
    t.metrics = MetricsLogger(run_dir, t.rank == 0)
    t.run_state = RunState()
    train_loop(t, StopRequest())
    t.metrics.close()
    records = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["step"] > warmup]
    mfu = statistics.median(r["mfu"] for r in records) if "mfu" in records[0] else None
    return statistics.median(r["bytes_per_s"] for r in records), mfu


def bench_model(model_section: dict, args, data: Path, folder: Path, rank, world, device):
    raw = {"data": {"datasets": [str(data)], "batch_size": args.batch_size,
                    "micro_batch_size": args.micro_batch_size or args.batch_size, "num_workers": args.workers},
           "model": model_section, "optim": {"warmup_steps": 5},
           "deepspeed": {"zero_stage": args.zero_stage},
           "run": {"out_dir": str(folder / "run"), "checkpoint_every": 0, "eval_every": 0,
                   "log_every": 1, "progress": False, "keep_last": 1, "compile": args.compile}}
    config = TrainConfig.from_dict(raw)
    t = build_trainer(config, rank, world, device)  # a fresh output directory: nothing to resume
    shards, mfu_shards = timed_run(t, args.steps, args.warmup, folder / "shards")
    batches = [next(t.batches) for _ in range(8)]  # then the same engine on batches in memory
    t.batches = itertools.cycle(batches)
    memory, mfu_memory = timed_run(t, args.steps, args.warmup, folder / "memory")
    params = sum(p.numel() for p in t.engine.module.parameters())
    return params, shards, memory, mfu_shards, mfu_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    parser.add_argument("--micro-batch-size", type=int,
                        help="sequences per forward/backward; the step accumulates batch-size / this many "
                             "(default: the batch size, no accumulation)")
    parser.add_argument("--workers", type=int, default=1, help="loader workers (default: 1)")
    parser.add_argument("--zero-stage", type=int, default=2, help="ZeRO stage (default: 2)")
    parser.add_argument("--models", default="megabyte,baseline", help="which to run (default: both)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    parser.add_argument("--megabyte-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model settings over the preset's, for MegaByte only (e.g. local_attention=matmul)")
    args = parser.parse_args()

    rank, world, device = init_distributed()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp))
        for name, section in zip(["megabyte", "baseline"], MODELS[args.preset]):
            if name not in args.models.split(","):
                continue
            if name == "megabyte":
                section = {**section, **dict(parse_setting(item) for item in args.megabyte_set)}
            rows.append((name, *bench_model(section, args, data, Path(tmp) / name, rank, world, device)))
    if rank != 0:
        return
    print(f"machine: {machine()}; preset {args.preset}{''.join(' ' + s for s in args.megabyte_set)}, "
          f"batch {args.batch_size}"
          f"{f' in micro-batches of {args.micro_batch_size}' if args.micro_batch_size else ''}, ZeRO-{args.zero_stage}, "
          f"{args.workers} loader workers, median of {args.steps} steps"
          f"{', blocks compiled' if args.compile else ''}")
    print(f"{'model':<10} {'params':>8} {'shards B/s':>12} {'memory B/s':>12} {'ratio':>6} {'MFU':>12}")
    for name, params, shards, memory, mfu_shards, mfu_memory in rows:
        mfu = f"{mfu_shards:.1%}/{mfu_memory:.1%}" if mfu_shards is not None else "-"
        print(f"{name:<10} {params / 1e6:7.1f}M {shards:12,.0f} {memory:12,.0f} {shards / memory:6.2f} {mfu:>12}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
