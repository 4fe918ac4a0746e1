"""Benchmark: where one training step's time goes, by model part, beside the time each part would
take at the device's peak FLOP rate.

    python bench/profile_gpu.py --preset tiny --device cpu --batch-size 4
    python bench/profile_gpu.py --preset gpu-350m --batch-size 8 --trace step.json
    python bench/profile_gpu.py --preset text --set global_layers=4 seq_len=4096 --activation-checkpointing
    python bench/profile_gpu.py --preset gpu-350m --batch-size 16 --deepspeed 2   # the trainer's engine

One step (forward with the head's fused loss as the trainer's or --plain-loss, backward, optimizer
step) after --warmup steps, recorded with torch.profiler. By default in plain PyTorch: AdamW
(fused on CUDA) under bf16 autocast. With --deepspeed STAGE, the trainer's own engine
(train/engine.py) at that ZeRO stage: bf16 weights with fp32 master copies on a GPU, its gradient
buckets, clipping and optimizer step, which the "optimizer" and "communication" parts then hold;
on CUDA the report also says how much of the step's wall time the kernels keep the device busy
(the rest it waits for the CPU: launches, Python, synchronisation). Hooks open a
record_function scope around each part's forward (the model code is untouched); backward ops run
outside those scopes, so each takes the part of the forward op that made its autograd node: both
carry the same sequence number. Every op (CPU) or kernel (CUDA) counts its own time only, so the
parts add up to the profiler's total.

Parts: global blocks (global_model; a baseline's transformer and PerceiverAR's cross block),
local blocks (local_model), embeddings and handover (the embeddings, conv encoder, w_GL and every
reshape, concatenation and pad of the model's forward outside the blocks), head and loss,
optimizer, gradients into .grad (autograd's AccumulateGrad nodes, with the hooks that run in them:
DeepSpeed's copy every gradient into ZeRO's buckets there), communication (nccl/gloo/c10d ops;
none in a single-process step), other (whatever no scope claims). "ideal" is the part's training FLOPs
(3 × model/flops.py's forward count × batch) at the peak: train/metrics.py's bf16 peak for known
GPUs, or --peak-tflops. bench/roofline.py counts the same parts' kernels, FLOPs and bytes without
a GPU, and the least time they can take.
"""

import argparse
import importlib.util
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402

from common import machine as machine_line, parse_setting  # noqa: E402  (bench/: this runs as a script)
from model import PRESETS, MegaByteConfig, build_model, byte_loss  # noqa: E402
from model.flops import count_flops  # noqa: E402
from train.metrics import peak_flops  # noqa: E402

GLOBAL, LOCAL, EMBED, HEAD = "global blocks", "local blocks", "embeddings and handover", "head and loss"
OPTIMIZER, GRADIENTS, COMMUNICATION, OTHER = "optimizer", "gradients into .grad", "communication", "other"
PARTS = (GLOBAL, LOCAL, EMBED, HEAD, OPTIMIZER, GRADIENTS, COMMUNICATION, OTHER)
# the model's children that have a scope of their own; the rest run inside the model's (EMBED)
PART_OF_CHILD = {"global_model": GLOBAL, "transformer": GLOBAL, "cross": GLOBAL, "local_model": LOCAL, "head": HEAD}
# model/flops.py's parts
PART_OF_FLOPS = {"global": GLOBAL, "global attention": GLOBAL, "cross": GLOBAL, "cross attention": GLOBAL,
                 "local": LOCAL, "local attention": LOCAL, "global to local": EMBED, "conv encoder": EMBED,
                 "head": HEAD}
SCOPE = "part: "
BACKWARD_NODE = "autograd::engine::evaluate_function: "
COMMUNICATION_NAME = re.compile(r"nccl|gloo|c10d|all_reduce|allreduce|reduce_scatter|all_gather|allgather", re.I)


def load_config(name: str, overrides: list[str], checkpointing: bool) -> MegaByteConfig:
    """A model preset, or a section of bench/train.py (NAME: its MegaByte, NAME:baseline: its
    baseline), with key=value overrides (values read as JSON, else as strings)."""
    if name in PRESETS:
        fields = PRESETS[name].to_dict()
    else:  # bench/train.py would shadow the package `train` if imported by name
        spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).with_name("train.py"))
        bench_train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_train)
        section, _, which = name.partition(":")
        if section not in bench_train.MODELS or which not in ("", "baseline"):
            raise SystemExit(f"--preset {name}: neither a model preset nor a section of bench/train.py "
                             f"({', '.join(bench_train.MODELS)}, with :baseline for its baseline)")
        fields = dict(bench_train.MODELS[section][1 if which else 0])
        fields = {**PRESETS[fields.pop("preset")].to_dict(), **fields}
    fields["activation_checkpointing"] |= checkpointing
    try:
        fields.update(parse_setting(override) for override in overrides)
        return MegaByteConfig.from_dict(fields)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--set: {error}") from None


def label_parts(model: torch.nn.Module) -> None:
    """Open a record_function scope named after its part around the model's forward and each
    labelled child's; an op's part is that of the innermost scope around it."""
    def add_scope(module, part):
        open_scopes = []
        module.register_forward_pre_hook(
            lambda module, args: open_scopes.append(torch.profiler.record_function(SCOPE + part).__enter__()))
        module.register_forward_hook(lambda module, args, output: open_scopes.pop().__exit__(None, None, None))

    add_scope(model, EMBED)
    for name, child in model.named_children():
        if name in PART_OF_CHILD:
            add_scope(child, PART_OF_CHILD[name])


def train_step(model, ids: torch.Tensor, bf16: bool, plain_loss: bool, backward, optimizer_step) -> float:
    """One training step: forward (under bf16 autocast if `bf16`), backward(loss), optimizer_step();
    its wall-clock seconds, the device's queue drained."""
    device = ids.device.type
    start = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        if plain_loss:  # the logits of every position, then byte_loss on them
            logits = model(ids)
            with torch.profiler.record_function(SCOPE + HEAD):
                loss = byte_loss(logits, ids)
        else:  # as the trainer: the head's fused loss, inside the head's scope
            loss, _ = model(ids, loss=True)
    backward(loss)
    with torch.profiler.record_function(SCOPE + OPTIMIZER):
        optimizer_step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plain_step(config: MegaByteConfig, args):
    """(model, step): plain PyTorch, AdamW (fused on CUDA), bf16 autocast or fp32 (--dtype)."""
    model = build_model(config).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device == "cuda")

    def optimizer_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ids = torch.randint(0, 256, (args.batch_size, config.seq_len), device=args.device)
    return model, lambda: train_step(model, ids, args.dtype == "bf16", args.plain_loss, torch.Tensor.backward,
                                     optimizer_step)


def engine_step(config: MegaByteConfig, args):
    """(model, step): the trainer's engine (train/engine.py) in a world of one: DeepSpeed at ZeRO
    stage --deepspeed, bf16 weights on a GPU (fp32 on CPU), the trainer's AdamW and gradient
    clipping; engine.backward, then engine.step (ZeRO's gradient and optimizer work)."""
    os.environ.setdefault("DS_ACCELERATOR", args.device)
    from train.config import TrainConfig
    from train.engine import build_engine, init_distributed

    _, world, device = init_distributed()
    engine = build_engine(TrainConfig.from_dict({
        "data": {"datasets": ["(batches made here)"], "batch_size": args.batch_size,
                 "micro_batch_size": args.batch_size},
        "model": config.to_dict(), "deepspeed": {"zero_stage": args.deepspeed}}), world)
    ids = torch.randint(0, 256, (args.batch_size, config.seq_len), device=device)
    return engine.module, lambda: train_step(engine, ids, False, args.plain_loss, engine.backward, engine.step)


def scope_of(event):
    """The innermost part scope, communication op or backward node around an event (itself
    included), or None."""
    while event is not None and not (event.name.startswith((SCOPE, BACKWARD_NODE))
                                     or COMMUNICATION_NAME.search(event.name)):
        event = event.cpu_parent
    return event


def attribute(events, on_cuda: bool) -> list[tuple[str, str, bool, float]]:
    """(name, part, whether a backward node gave the part, own µs) of every CPU op, or on CUDA of
    every kernel, memcpy and memset (placed by the CPU op that launched it)."""
    scopes = {id(event): scope_of(event) for event in events}
    made_by = {}  # (sequence number, thread) → part of the forward op that made that autograd node
    for event in sorted(events, key=lambda event: event.time_range.start):
        scope = scopes[id(event)]  # several ops record a number: the last made the node
        if event.sequence_nr >= 0 and not (scope and scope.name.startswith(BACKWARD_NODE)):
            made_by[event.sequence_nr, event.thread] = part_of(scope, {})[0]
    if not on_cuda:
        return [(event.name, *part_of(scopes[id(event)], made_by), event.self_cpu_time_total)
                for event in events if event.device_type == DeviceType.CPU]
    launchers = {event.id: event for event in events
                 if event.device_type == DeviceType.CPU and event.linked_correlation_id == 0}
    rows = []
    for kernel in events:
        if kernel.device_type != DeviceType.CPU and not kernel.is_user_annotation:
            launcher = launchers.get(kernel.linked_correlation_id)
            scope = kernel if COMMUNICATION_NAME.search(kernel.name) else launcher and scopes[id(launcher)]
            rows.append((kernel.name, *part_of(scope, made_by), kernel.self_device_time_total))
    return rows


def part_of(scope, made_by: dict) -> tuple[str, bool]:
    """The part a scope (from scope_of) stands for, and whether a backward node gave it."""
    if scope is None:
        return OTHER, False
    if scope.name.startswith(SCOPE):
        return scope.name[len(SCOPE):], False
    if scope.name.startswith(BACKWARD_NODE):  # AccumulateGrad has no number: it has a part of its own
        key = scope.sequence_nr, scope.fwd_thread
        if key in made_by:
            return made_by[key], True
        return (GRADIENTS if "AccumulateGrad" in scope.name else OTHER), False
    return COMMUNICATION, False


def profiler_total(prof, on_cuda: bool) -> float:
    """The step's total µs as the profiler's own table counts it: self CPU time, or the self time
    of device events (kernels, copies), user annotations left out."""
    averages = prof.key_averages()
    if not on_cuda:
        return sum(avg.self_cpu_time_total for avg in averages)
    return sum(avg.self_device_time_total for avg in averages
               if avg.device_type != DeviceType.CPU and not avg.is_user_annotation)


def profile_step(args) -> dict:
    """Build, warm up and profile one step: {"config", "parts" (part → µs), "total" (µs),
    "backward_events" (part → count), "top" [(name, part, µs)], "seconds" (the fastest unprofiled
    step's wall time, or the profiled one's without warm-up)}."""
    torch.manual_seed(0)
    config = load_config(args.preset, args.set, args.activation_checkpointing)
    on_cuda = args.device == "cuda"
    model, step = plain_step(config, args) if args.deepspeed is None else engine_step(config, args)
    label_parts(model)
    seconds = [step() for _ in range(args.warmup)]
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        seconds.append(step())
    if args.trace:
        prof.export_chrome_trace(args.trace)
    rows = attribute(prof.events(), on_cuda)
    parts, backward_events, top = Counter(), Counter(), Counter()
    for name, part, backward, microseconds in rows:
        parts[part] += microseconds
        backward_events[part] += backward
        top[name, part] += microseconds
    return dict(config=config, parts=parts, total=profiler_total(prof, on_cuda), backward_events=backward_events,
                top=[(name, part, us) for (name, part), us in top.most_common(args.top)],
                seconds=min(seconds[:-1] or seconds))


def report(args, result: dict) -> None:
    config, parts, total = result["config"], result["parts"], result["total"]
    flops = count_flops(config)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops() if args.device == "cuda" else None
    ideal = Counter()  # µs of each part's training FLOPs at the peak
    for name, forward in flops.parts.items():
        ideal[PART_OF_FLOPS[name]] += 3 * forward * args.batch_size / peak * 1e6 if peak else 0
    gpu = [torch.cuda.get_device_name()] if args.device == "cuda" else []
    print(f"machine: {machine_line(*gpu, f'torch {torch.__version__}', f'{torch.get_num_threads()} threads')}")
    print(f"model: {args.preset} ({config.architecture}, T={config.seq_len}, P={config.patch_size}), "
          f"batch {args.batch_size}, {args.device} "
          f"{f'DeepSpeed ZeRO-{args.deepspeed} (the trainer engine)' if args.deepspeed is not None else args.dtype}"
          f"{', activation checkpointing' if config.activation_checkpointing else ''}; "
          f"peak {f'{peak / 1e12:g} TFLOP/s' if peak else 'n/a (--peak-tflops)'}")
    time_kind = "kernel time" if args.device == "cuda" else "CPU self time"
    print(f"\n{'part':<26}{'measured ms':>12}{'share':>8}{'ideal ms':>10}{'efficiency':>11}  ({time_kind})")
    rows = [(part, parts[part], parts[part] / total, ideal[part]) for part in PARTS]
    rows.append(("total (profiler)", total, sum(parts.values()) / total, sum(ideal.values())))
    for name, measured, share, ideal_us in rows:
        efficiency = f"{ideal_us / measured:.1%}" if ideal_us and measured else "n/a"
        print(f"{name:<26}{measured / 1e3:>12.2f}{share:>8.1%}"
              f"{f'{ideal_us / 1e3:.2f}' if ideal_us else 'n/a':>10}{efficiency:>11}")
    print("share: of the profiler's total; on its row, the parts' sum (each op counted once: 100%)")
    backward = ", ".join(f"{part} {n}" for part, n in result["backward_events"].items() if n)
    print(f"backward events placed by their forward op: {backward}")
    seconds = result["seconds"]
    step_flops = 3 * flops.forward * args.batch_size
    mfu = f"{step_flops / seconds / peak:.1%}" if peak else "n/a"
    print(f"\nstep: {seconds * 1e3:.1f} ms wall ({'fastest unprofiled step' if args.warmup else 'the profiled step'}), "
          f"{args.batch_size * config.seq_len / seconds:,.0f} bytes/s, "
          f"{step_flops / seconds / 1e12:.3f} TFLOP/s, MFU {mfu}")
    if args.device == "cuda":  # kernel time barely grows under the profiler; the CPU's time does
        print(f"device busy: {total / 1e3:.1f} ms of kernels in the {seconds * 1e3:.1f} ms step "
              f"({total / 1e6 / seconds:.0%}); the rest it waits for the CPU")
    print(f"\ntop {args.top} {'kernels' if args.device == 'cuda' else 'ops'} by self time:")
    for name, part, microseconds in result["top"]:
        name = name if len(name) <= 70 else name[:67] + "..."
        print(f"{microseconds / 1e3:>10.2f} ms {microseconds / total:>6.1%}  {part:<24} {name}")


def add_step_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """The step's model and batch, as load_config takes them (bench/roofline.py's too)."""
    parser.add_argument("--preset", default="tiny",
                        help="a model preset (model/presets.py), or a section of bench/train.py: gpu-350m "
                             "(its MegaByte), gpu-350m:baseline (its baseline), gpu-table13, ...")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="model config overrides, e.g. seq_len=2048 local_attention=matmul")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"sequences per step (default: {batch_size})")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute each block in backward")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser, batch_size=8)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp32"),
                        help="bf16: the step under bf16 autocast (default on cuda); fp32 (default on cpu)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (default: 2)")
    parser.add_argument("--deepspeed", type=int, choices=(0, 1, 2, 3), metavar="STAGE",
                        help="profile the trainer's DeepSpeed engine at this ZeRO stage (bf16 weights on "
                             "a GPU, fp32 on CPU; --dtype is then ignored) instead of plain PyTorch")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak, for the ideal column and MFU (default: the bf16 peak of "
                             "known GPUs, so give the fp32 one with --dtype fp32; none on CPU: n/a)")
    parser.add_argument("--plain-loss", action="store_true",
                        help="logits of every position, then byte_loss (default: the head's fused loss, as the trainer)")
    parser.add_argument("--trace", help="also write the step's Chrome trace (chrome://tracing, Perfetto) here")
    parser.add_argument("--top", type=int, default=15, help="kernels (ops on CPU) listed (default: 15)")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    return args


def main():
    args = parse_args()
    report(args, profile_step(args))


if __name__ == "__main__":
    main()
