"""Setting up the DeepSpeed engine: distributed init, DeepSpeed config, optimizer, schedule.

CPU runs (DS_ACCELERATOR=cpu, or no CUDA device) use gloo and fp32; GPU runs use NCCL and bf16 by
default. A plain `python -m train.main` is a world of one: the rendezvous variables the launcher
would set are filled in here.
"""

import errno
import json
import logging
import math
import os
import socket
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from model import build_model
from pipeline.format.errors import UsageError
from train.config import ConfigError, TrainConfig
from train.reshard import repair_universal_load, universal_folder

if TYPE_CHECKING:  # deepspeed picks its accelerator on import: imported once DS_ACCELERATOR is set
    from deepspeed import DeepSpeedEngine


def on_gpu() -> bool:
    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") == "cuda"


def init_distributed() -> tuple[int, int, torch.device]:
    """Join (or, without a launcher, create) the process group; returns (rank, world size, device)."""
    if "RANK" not in os.environ:  # plain python: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    gpu = on_gpu()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if gpu else "cpu")
    import deepspeed  # after DS_ACCELERATOR is settled: it picks its accelerator on import
    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)  # its INFO lines would drown the progress bar
    if not gpu:
        prepare_cpu_comm_op(int(os.environ["WORLD_SIZE"]))
    with open(os.devnull, "w") as quiet, redirect_stdout(quiet):  # "... built successfully", each run
        deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo", verbose=False)
    if not gpu and int(os.environ["WORLD_SIZE"]) > 1:
        release_cpu_comm_buffer()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def prepare_cpu_comm_op(world_size: int) -> None:
    """DeepSpeed's CPU communication op (a shared-memory all-reduce) is C++ compiled on first use,
    about a minute without a word. It serves only when every rank is on this machine (DeepSpeed's
    test: the launcher's LOCAL_SIZE equals the world size), so a world of one and a run over
    several nodes go without; otherwise each machine's local rank 0 says once that they are
    waiting for the build."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None:
        return
    if world_size == 1 or os.environ.get("LOCAL_SIZE") != str(world_size):
        deepspeed.ops.__compatible_ops__[builder.NAME] = False  # build_shm_op then skips it
        return
    built = any(Path(_get_build_directory(builder.NAME, verbose=False)).glob("*.so"))
    if not built and os.environ.get("LOCAL_RANK", "0") == "0":
        print("building DeepSpeed's CPU communication op, once (about a minute)…", file=sys.stderr)


def release_cpu_comm_buffer() -> None:
    """DeepSpeed's CPU all-reduce shares a 66 MB buffer per rank through /dev/shm (in RAM) and
    never unlinks it: every run on several ranks left its buffers behind until the machine ran
    out of memory. Once every rank has mapped every other's (each has when it passes the barrier),
    the names can go: the mappings stay, and the memory is freed when the last rank exits, even
    killed. (The name is DeepSpeed's: shm.cpp, shm_initialize.)"""
    torch.distributed.barrier()
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_"
            f"{os.environ['MASTER_PORT']}_{os.environ['RANK']}")
    Path("/dev/shm", name).unlink(missing_ok=True)


def use_bf16(config: TrainConfig) -> bool:
    return config.deepspeed.precision == "bf16" or (config.deepspeed.precision == "auto" and on_gpu())


def deepspeed_config(config: TrainConfig, world_size: int, load_universal: bool = False) -> dict:
    """The DeepSpeed config dict for this run (a raw JSON from deepspeed.config_file is the base);
    `load_universal`: the engine will resume from a universal checkpoint (train.reshard)."""
    section = config.deepspeed
    base = {}
    if section.config_file:
        try:
            with open(section.config_file, encoding="utf-8") as f:
                base = json.load(f)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{section.config_file}: cannot read the DeepSpeed JSON ({error})") from None
    zero = {"stage": section.zero_stage, **base.get("zero_optimization", {})}
    if section.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu()}
    if section.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu()}
    micro, accumulation = config.data.micro_batch_size, config.accumulation_steps(world_size)
    return {
        **base,
        "train_batch_size": micro * world_size * accumulation,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": config.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(config)},
        "zero_allow_untested_optimizer": True,  # our torch AdamW: fused on GPU, exact on CPU
        "steps_per_print": base.get("steps_per_print", 10**9),  # we log ourselves
        "wall_clock_breakdown": False,
        "checkpoint": {**base.get("checkpoint", {}), "load_universal": load_universal},
    }


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not norms, biases or embedding tables)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_embedding = "emb" in name or "pad" in name
        shape = getattr(parameter, "ds_shape", parameter.shape)  # ZeRO-3 partitioned: its whole shape
        (decay if len(shape) >= 2 and not is_embedding else no_decay).append(parameter)
    optim = config.optim
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                             fused=on_gpu())


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warm-up, then the decay."""
    optim = config.optim
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.total_steps - optim.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * shape


def compile_blocks(model: torch.nn.Module, backend: str = "inductor") -> None:
    """torch.compile every transformer block in place: parameter names (checkpoints, export)
    stay as they are, and the kernels between the matrix products get fused.

    Static shapes: a run's shapes never change. Left to itself, torch.compile traces the second
    block shape it meets (MegaByte's local blocks after its global ones) with symbolic sizes; the
    attention's is_causal then becomes a symbolic bool, which SDPA refuses, and every such block
    broke into two graphs around its attention, run eagerly in between."""
    from model.layers import Block

    for module in model.modules():
        if isinstance(module, Block):
            module.compile(backend=backend, dynamic=False)


def build_engine(config: TrainConfig, world_size: int, load_universal: bool = False) -> "DeepSpeedEngine":
    """The model, wrapped by DeepSpeed with our AdamW and a LambdaLR schedule (stepped by the
    engine); `load_universal`: it will resume from a universal checkpoint (train.reshard)."""
    import deepspeed

    ds_config = deepspeed_config(config, world_size, load_universal)
    model = build_rank_model(config, ds_config)
    if config.run.compile:
        compile_blocks(model)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                      config=ds_config)
    return engine


def build_rank_model(config: TrainConfig, ds_config: dict) -> torch.nn.Module:
    """This rank's model. ZeRO-3: built inside deepspeed.zero.Init, each parameter cut into its
    ranks' partitions as soon as the module that owns it is built, so that no rank ever holds the
    whole model; every rank draws the same initial values (same seed, same order) as a model
    built whole. Other stages: the whole model, on every rank."""
    import deepspeed

    if config.deepspeed.zero_stage != 3:
        return build_model(config.model)
    with deepspeed.zero.Init(config_dict_or_path=ds_config), initialising_partitioned_parameters():
        return build_model(config.model)


INIT_FUNCTIONS = ("trunc_normal_", "normal_", "uniform_", "zeros_", "ones_", "constant_")


@contextmanager
def initialising_partitioned_parameters():
    """Within, torch.nn.init's functions also initialise a ZeRO-3 partitioned parameter: gathered
    whole, set, and partitioned again. zero.Init partitions a module's parameters when its
    __init__ returns, and our models initialise a submodule's weights from the parent's __init__
    (model.layers.init_block, the embeddings in MegaByte.__init__): without this, those calls
    would see empty tensors and silently leave PyTorch's default initialisation in place."""
    import deepspeed

    def gathering(function):
        def initialise(tensor, *args, **kwargs):
            if not hasattr(tensor, "ds_id"):  # an ordinary tensor, or one not partitioned yet
                return function(tensor, *args, **kwargs)
            # every rank draws the same values (same seed, same order); rank 0's are kept
            with deepspeed.zero.GatheredParameters([tensor], modifier_rank=0):
                function(tensor, *args, **kwargs)
            return tensor
        return initialise

    originals = {name: getattr(torch.nn.init, name) for name in INIT_FUNCTIONS}
    try:
        for name, function in originals.items():
            setattr(torch.nn.init, name, gathering(function))
        yield
    finally:
        for name, function in originals.items():
            setattr(torch.nn.init, name, function)


# how torch.save's writer words a failed write: a full disk says "unexpected pos" (a short write
# found at the next record), "file write failed", or the stream's "iostream error"
TORCH_WRITE_FAILURES = ("write", "unexpected pos", "iostream error")


class EngineState:
    """The engine (model, optimizer, lr schedule) as a checkpoint part. DeepSpeed writes and reads
    it in its own format, every rank its ZeRO partition (train.checkpoint.SavesItself)."""

    def __init__(self, engine: "DeepSpeedEngine"):
        self.engine = engine

    def save(self, folder: Path) -> None:
        try:
            self.engine.save_checkpoint(str(folder.parent), tag=folder.name, save_latest=False)
        except RuntimeError as error:  # torch.save's writer reports a failed write (disk full) so
            if not any(words in str(error) for words in TORCH_WRITE_FAILURES):
                raise
            raise OSError(errno.EIO, f"torch.save failed: {str(error).splitlines()[0]}") from None

    def load(self, folder: Path) -> None:
        """From `folder`, or from its universal conversion when the engine was built to read one."""
        universal = self.engine.load_universal_checkpoint()
        source = universal_folder(folder) if universal else folder
        load_path, _ = self.engine.load_checkpoint(str(source.parent), tag=source.name)
        if load_path is None:
            raise UsageError(f"{folder}: DeepSpeed could not load this checkpoint")
        if universal:
            repair_universal_load(self.engine, source)
