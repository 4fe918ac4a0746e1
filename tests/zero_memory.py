"""Run by tests/test_engine.py on 2 ranks (torchrun): what one rank holds of a ~27M-parameter
MegaByte under the ZeRO stage given.

    python -m torch.distributed.run --nproc_per_node 2 tests/zero_memory.py --stage 3

Each rank prints one JSON line with, in KiB above its resident memory just before (VmRSS):
- "model_peak": its peak (VmHWM) while it builds its model as train.engine.build_rank_model does
  (ZeRO-3: inside deepspeed.zero.Init, partitioned as it is built; other stages: whole);
- "training_peak": its peak once the engine is built around it and one step taken (Adam's
  moments exist from then on);
and "same_initial_weights": whether the (sum, sum of squares) of every initial parameter,
gathered one at a time, are those of the same model built whole in plain PyTorch.
Run with MALLOC_MMAP_THRESHOLD_ set (glibc would otherwise keep freed blocks resident).
"""

import argparse
import json

import deepspeed
import torch
import torch.distributed as dist

from model import build_model, byte_loss
from train.config import load_config
from train.engine import build_optimizer, build_rank_model, deepspeed_config, init_distributed
from train.trainer import seed_everything

MODEL = ["model.seq_len=64", "model.global_dim=512", "model.global_layers=8", "model.global_heads=8",
         "model.local_dim=256", "model.local_layers=2", "model.local_heads=4", "model.dropout=0.0"]


def memory_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def fingerprints(model: torch.nn.Module) -> dict[str, list[float]]:
    prints = {}
    for name, parameter in model.named_parameters():
        with deepspeed.zero.GatheredParameters([parameter]):  # whole for a moment (a no-op unpartitioned)
            values = parameter.detach().double()
            prints[name] = [values.sum().item(), values.square().sum().item()]
    return prints


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", type=int, required=True)
    args = parser.parse_args()
    rank, world_size, _ = init_distributed()
    config = load_config("tiny-cpu", [*MODEL, f"deepspeed.zero_stage={args.stage}", "data.batch_size=2",
                                      "data.micro_batch_size=1"])
    ds_config = deepspeed_config(config, world_size)
    dist.barrier()
    baseline = memory_kib("VmRSS")
    seed_everything(config.run.seed)
    model = build_rank_model(config, ds_config)
    model_peak = memory_kib("VmHWM")
    initial = fingerprints(model)
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, config), config=ds_config)
    ids = torch.arange(64).remainder(7).unsqueeze(0)  # (1, T)
    engine.backward(byte_loss(engine(ids), ids))
    engine.step()
    training_peak = memory_kib("VmHWM")
    seed_everything(config.run.seed)
    whole = fingerprints(build_model(config.model))
    print(json.dumps({"rank": rank, "stage": args.stage, "model_peak": model_peak - baseline,
                      "training_peak": training_peak - baseline, "same_initial_weights": initial == whole,
                      "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())}),
          flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
