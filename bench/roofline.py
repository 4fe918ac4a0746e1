"""Benchmark without a GPU: one training step counted kernel by kernel, and its least time on a GPU.

The kernels one eager bf16 training step launches, by model part, the FLOPs they do and the bytes
they move, and the least time each would take on a given GPU.

    python bench/roofline.py --preset gpu-350m --batch-size 16 --gpu H200
    python bench/roofline.py --preset gpu-table13 --batch-size 16 --set local_attention=matmul

The step runs on PyTorch's meta device (shapes and strides, no arithmetic: seconds even for a 1.3B
model) as the trainer's engine runs it on a GPU: bf16 weights (DeepSpeed's bf16 mode, no autocast),
the head's fused loss, backward (recomputing the blocks with activation checkpointing), then
DeepSpeed's bf16 optimizer: the bf16 gradients cast to fp32, a fused AdamW step on fp32 master
weights, the new weights cast back (parameter by parameter here, where DeepSpeed works on flat
buffers: the same bytes in fewer kernels). SDPA runs as on CUDA: the flash kernels without a mask, the
memory-efficient ones with one (their meta kernels give CUDA's shapes).

A dispatch mode records every ATen op that launches a kernel (views, copy-free reshapes and
allocations launch none) with its FLOPs (torch.utils.flop_counter's; a causal attention
kernel's about halved, as it skips the masked blocks) and its bytes: each tensor it reads and
each it writes, once (a broadcast dimension counts once). A kernel takes at least
max(FLOPs / peak, bytes / memory bandwidth), its roofline; their sum is the least time the eager
step can take with perfect kernels, and the model's FLOPs (model/flops.py) over that sum at the
peak is the highest MFU it can reach. Beside a measured profile (bench/profile_gpu.py, same
parts) it says how far each part's kernels are from their bound; and since FLOPs and bytes depend
on the code alone, a change to the model shows its effect on them exactly, here, without a GPU.

Parts as bench/profile_gpu.py's. An op in forward belongs to the innermost labelled module
running it; an op in backward to the part whose forward made the autograd node being run (by
sequence number); the optimizer's to the optimizer.
"""

import argparse
import os
import sys
from collections import Counter
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from common import machine  # noqa: E402  (bench/: this runs as a script)
from model import build_model  # noqa: E402
from model.flops import count_flops  # noqa: E402
from profile_gpu import (EMBED, OPTIMIZER, OTHER, PART_OF_CHILD, PARTS, add_step_arguments,  # noqa: E402
                         load_config)
from train.metrics import PEAK_BF16_FLOPS, PEAK_MEMORY_BANDWIDTH  # noqa: E402

# ops that only allocate or relabel memory: no kernel (the schema does not say so for these)
NO_KERNEL = {"_unsafe_view", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "detach", "alias", "lift_fresh"}
NOT_READ = {"copy_": {"self"}}  # written arguments a kernel does not read
NOT_WRITTEN = {"_fused_adamw_": {"grads"}}  # arguments marked written that a kernel only reads


def launches_kernel(func) -> bool:
    """False for views (every output an alias of an input, none written) and NO_KERNEL."""
    returns = func._schema.returns
    if func.overloadpacket.__name__ in NO_KERNEL:
        return False
    return not (returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns))


def tensor_bytes(tensor: torch.Tensor) -> int:
    """The bytes a kernel touches in a tensor: a broadcast (stride 0) dimension once."""
    elements = 1
    for size, stride in zip(tensor.shape, tensor.stride()):
        elements *= size if stride else 1
    return elements * tensor.element_size()


def named_arguments(func, args, kwargs) -> dict:
    return {**{arg.name: value for arg, value in zip(func._schema.arguments, args)}, **kwargs}


def kernel_flops(func, args, kwargs, out) -> float:
    """torch.utils.flop_counter's count; a causal attention kernel skips the blocks above the
    diagonal: (S+1)/(2S) of it for S keys, model/flops.py's (S+1)/2 keys per query."""
    count = flop_registry.get(func.overloadpacket)
    if count is None:
        return 0
    flops = count(*args, **kwargs, out_val=out)
    named = named_arguments(func, args, kwargs)
    if named.get("is_causal"):
        keys = named["key"].shape[-2]
        flops *= (keys + 1) / (2 * keys)
    return flops


def moved_bytes(func, args, kwargs, out) -> int:
    """Bytes read (every tensor argument) plus bytes written (the outputs and the arguments the
    schema marks written), each tensor once per direction."""
    name = func.overloadpacket.__name__
    named = named_arguments(func, args, kwargs)
    written_args = {arg.name for arg in func._schema.arguments
                    if arg.alias_info is not None and arg.alias_info.is_write} - NOT_WRITTEN.get(name, set())
    read = {id(t): t for key, value in named.items() if key not in NOT_READ.get(name, ())
            for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)}
    written = {id(t): t for value in [out, *(named[key] for key in written_args if key in named)]
               for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)}
    return sum(map(tensor_bytes, read.values())) + sum(map(tensor_bytes, written.values()))


class PartTracker:
    """Which part an op belongs to (see the module docstring). The forward hooks note the span of
    autograd sequence numbers each labelled module call made; a node's part is that of the
    innermost span holding its number."""

    def __init__(self, model: torch.nn.Module):
        self.open_calls = []  # (part, first sequence number) of the labelled calls running
        self.spans = []  # (first, end, part) of every finished call
        self.optimizer = False
        self.label(model, EMBED)
        for name, child in model.named_children():
            if name in PART_OF_CHILD:
                self.label(child, PART_OF_CHILD[name])

    def label(self, module: torch.nn.Module, part: str):
        next_number = torch._C._autograd._get_sequence_nr  # the number the next node will get

        def close(module, args, output):
            part, first = self.open_calls.pop()
            self.spans.append((first, next_number(), part))

        module.register_forward_pre_hook(lambda module, args: self.open_calls.append((part, next_number())))
        module.register_forward_hook(close)

    def current(self) -> str:
        if self.optimizer:
            return OPTIMIZER
        node = torch._C._current_autograd_node()
        if node is not None:  # backward (a recomputed block too: it runs inside its node)
            number = node._sequence_nr()
            holding = [(end - first, part) for first, end, part in self.spans if first <= number < end]
            return min(holding)[1] if holding else OTHER
        return self.open_calls[-1][0] if self.open_calls else OTHER


class KernelRecorder(TorchDispatchMode):
    """Records (part, op name, FLOPs, bytes) of every kernel-launching op."""

    def __init__(self, parts: PartTracker):
        super().__init__()
        self.parts = parts
        self.kernels = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if launches_kernel(func):
            self.kernels.append((self.parts.current(), func.overloadpacket.__name__,
                                 kernel_flops(func, args, kwargs, out), moved_bytes(func, args, kwargs, out)))
        return out


class CudaAttention(torch.autograd.Function):
    """scaled_dot_product_attention by the kernels CUDA picks for these calls (flash without a
    mask, memory-efficient with one), through their meta implementations. q (N, nh, n, hs), k, v
    (N, nh, S, hs), mask broadcast to (N, nh, n, S) or None → (N, nh, n, hs)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, is_causal, dropout_p):
        ctx.is_causal, ctx.dropout_p = is_causal, dropout_p
        if mask is None:
            flash = torch.ops.aten._scaled_dot_product_flash_attention
            out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = flash(q, k, v, dropout_p, is_causal)
            ctx.flash = (cum_q, cum_k, max_q, max_k, seed, offset)
            bias = None
        else:  # the boolean mask becomes an additive bias, as SDPA makes it
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, bias, True, dropout_p, is_causal)
            ctx.flash = None
            ctx.efficient = (seed, offset)
        ctx.save_for_backward(q, k, v, out, lse, bias)
        # CUDA's kernels write (N, n, nh, hs) and return it transposed (the meta ones do not)
        return out.new_empty(out.shape[0], out.shape[2], out.shape[1], out.shape[3]).transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, bias = ctx.saved_tensors
        if ctx.flash is not None:
            cum_q, cum_k, max_q, max_k, seed, offset = ctx.flash
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
                grad, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, ctx.dropout_p, ctx.is_causal, seed, offset)
        else:
            efficient = torch.ops.aten._scaled_dot_product_efficient_attention_backward
            dq, dk, dv, _ = efficient(grad, q, k, v, bias, out, lse, *ctx.efficient, ctx.dropout_p,
                                      [True, True, True, False], ctx.is_causal)  # gradients of q, k, v, not bias
        return dq, dk, dv, None, None, None


def cuda_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention's signature (the model's calls leave scale and enable_gqa
    at their defaults) → CudaAttention."""
    assert scale is None and not enable_gqa, "only the default scale, without grouped queries"
    return CudaAttention.apply(q, k, v, attn_mask, is_causal, dropout_p)


def record_step(config, batch_size: int) -> list[tuple[str, str, float, int]]:
    """One bf16 training step on the meta device → its kernels (part, op, FLOPs, bytes)."""
    with torch.device("meta"):
        model = build_model(config).to(torch.bfloat16).train()
        masters = [p.detach().float() for p in model.parameters()]  # ZeRO's fp32 master weights
        moments = [(torch.empty_like(w), torch.empty_like(w)) for w in masters]
        steps = [torch.empty(()) for _ in masters]
    parts = PartTracker(model)
    ids = torch.randint(0, 256, (batch_size, config.seq_len), device="meta")
    recorder = KernelRecorder(parts)
    # patched in the module the model looks it up in at every call: a recomputed block gets it too
    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", cuda_attention), recorder:
        loss, _ = model(ids, loss=True)
        loss.backward()
        parts.optimizer = True
        grads = [p.grad.float() for p in model.parameters()]  # (DeepSpeed's bf16 optimizer)
        torch._fused_adamw_(masters, grads, [m for m, _ in moments], [v for _, v in moments], [], steps,
                            lr=1e-4, beta1=0.9, beta2=0.95, weight_decay=0.1, eps=1e-8, amsgrad=False,
                            maximize=False)
        with torch.no_grad():
            for p, master in zip(model.parameters(), masters):
                p.copy_(master)
    return recorder.kernels


def roofline(kernels, peak: float, bandwidth: float) -> dict:
    """(part, op) → Counter of "kernels", "flops", "bytes", "compute", "memory", "bound" (seconds at
    the peak, at the bandwidth, and the roofline: the larger of the two, kernel by kernel). Each
    kernel is (part, op, FLOPs, bytes), with a fifth item where it runs a weighted number of times
    (bench/roofline_generate.py: how often per generated byte)."""
    rows = {}
    for part, name, flops, nbytes, *weight in kernels:
        times = weight[0] if weight else 1
        compute, memory = flops / peak, nbytes / bandwidth
        rows.setdefault((part, name), Counter()).update(
            kernels=times, flops=flops * times, bytes=nbytes * times, compute=compute * times,
            memory=memory * times, bound=max(compute, memory) * times)
    return rows


def report(args, config, rows: dict):
    peak, bandwidth = PEAK_BF16_FLOPS[args.gpu], PEAK_MEMORY_BANDWIDTH[args.gpu]
    by_part = {part: Counter() for part in PARTS}
    for (part, _), row in rows.items():
        by_part[part].update(row)
    total = sum(by_part.values(), Counter())
    model_flops = 3 * count_flops(config).forward * args.batch_size
    print(f"machine: {machine(f'torch {torch.__version__}')} (counted on the meta device)")
    print(f"model: {args.preset} ({config.architecture}, T={config.seq_len}, P={config.patch_size}), batch "
          f"{args.batch_size}, bf16{', activation checkpointing' if config.activation_checkpointing else ''}; "
          f"{args.gpu}: {peak / 1e12:g} TFLOP/s, {bandwidth / 1e12:g} TB/s")
    print(f"\n{'part':<26}{'kernels':>8}{'TFLOP':>9}{'GB':>9}{'compute ms':>12}{'memory ms':>11}"
          f"{'bound ms':>10}{'share':>8}")
    for name, row in [*by_part.items(), ("total", total)]:
        print(f"{name:<26}{row['kernels']:>8}{row['flops'] / 1e12:>9.2f}{row['bytes'] / 1e9:>9.2f}"
              f"{row['compute'] * 1e3:>12.2f}{row['memory'] * 1e3:>11.2f}{row['bound'] * 1e3:>10.2f}"
              f"{row['bound'] / total['bound']:>8.1%}")
    print("compute/memory: the part's FLOPs at the peak, its bytes at the bandwidth; bound: the sum over its "
          "kernels of the larger of the two")
    print(f"\nmodel FLOPs per step (model/flops.py × 3): {model_flops / 1e12:.2f} TFLOP; counted above: "
          f"{total['flops'] / 1e12:.2f}; at the roofline the step takes ≥ {total['bound'] * 1e3:.1f} ms: "
          f"MFU ≤ {model_flops / peak / total['bound']:.1%}")
    print(f"\ntop {args.top} ops by roofline time:")
    top = sorted(rows.items(), key=lambda item: -item[1]["bound"])[:args.top]
    for (part, name), row in top:
        kind = "memory" if row["memory"] > row["compute"] else "compute"
        print(f"{row['bound'] * 1e3:>9.2f} ms {row['bound'] / total['bound']:>6.1%}  {part:<24} {name:<36}"
              f"×{row['kernels']:<5} {row['bytes'] / 1e9:>7.2f} GB {kind}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser, batch_size=16)
    parser.add_argument("--gpu", choices=sorted(PEAK_MEMORY_BANDWIDTH), default="H100",
                        help="whose peak bf16 FLOP/s and memory bandwidth (default: H100)")
    parser.add_argument("--top", type=int, default=15, help="ops listed (default: 15)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    config = load_config(args.preset, args.set, args.activation_checkpointing)
    report(args, config, roofline(record_step(config, args.batch_size), PEAK_BF16_FLOPS[args.gpu],
                                  PEAK_MEMORY_BANDWIDTH[args.gpu]))


if __name__ == "__main__":
    main()
