"""Benchmark: the local model's attention kernel, SDPA against batched matmuls (local_attention).

    python bench/local_attention.py                           # tiny shapes, fp32 (CPU) / bf16 (CUDA)
    python bench/local_attention.py --preset gpu-350m         # the default on CUDA
    python bench/local_attention.py --patches 16 --repeats 5  # fewer patches: quicker on a CPU

The local model attends within each patch of P bytes (and the last r bytes of the previous one with
cross-patch attention): B·K sequences of P queries and r+P keys. SDPA's flash kernel pads such short
sequences up to its block size; plain matmuls (q·kᵀ, softmax in fp32, ·v) materialize the small
(B·K, nh, P, r+P) scores instead. This times forward + backward of the local Transformer stack alone
(a MegaByte's `local_model`, on a random (B, K, P, D_L) input with a gradient), for P in 4, 8, 16
and r in 0 and P: the median of --repeats steps after --warmup, the two kernels taken in turns so
that load from elsewhere lands on both. sdpa/matmul > 1: matmul is faster.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import machine as machine_line, synchronize  # noqa: E402  (bench/: this runs as a script)
from model import MegaByteConfig, build_model  # noqa: E402

KERNELS = ("sdpa", "matmul")
# local model shapes: "tiny" is the tiny preset's local model; "gpu-350m" that of bench/train.py's
# ~350M MegaByte (16 sequences of 8192 bytes in patches of 8: B·K = 16·1024)
PRESETS = {
    "tiny": dict(local_dim=128, local_layers=2, local_heads=4, batch=4, patches=64),
    "gpu-350m": dict(local_dim=512, local_layers=8, local_heads=4, batch=16, patches=1024),
}


def local_model(preset: dict, P: int, r: int, kernel: str) -> torch.nn.Module:
    """The local Transformer of a MegaByte with these local shapes (its global half is a stub)."""
    config = MegaByteConfig(seq_len=preset["patches"] * P, patch_size=P, global_dim=P, global_layers=1,
                            global_heads=1, local_dim=preset["local_dim"], local_layers=preset["local_layers"],
                            local_heads=preset["local_heads"], dropout=0.0, local_cross_patch=r,
                            local_attention=kernel)
    torch.manual_seed(0)  # the same weights for both kernels
    return build_model(config).local_model


def measure(args, preset: dict, P: int, r: int) -> dict:
    """{kernel: (median ms per forward + backward, MiB the step adds at its peak (CUDA) or None)}
    and the largest difference between the two kernels' outputs."""
    B, K, D_L = preset["batch"], preset["patches"], preset["local_dim"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(B, K, P, D_L, generator=generator).to(args.device).requires_grad_()
    grad = torch.randn(B, K, P, D_L, generator=generator).to(args.device)
    models = {kernel: local_model(preset, P, r, kernel).to(args.device).train() for kernel in KERNELS}
    outputs = {}

    def step(kernel: str):
        x.grad = None
        models[kernel].zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            y = models[kernel](x)  # (B, K, P, D_L)
        y.backward(grad)
        return y

    peaks = {}
    for kernel in KERNELS:
        if args.device == "cuda":  # what the step adds to what is already there
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        outputs[kernel] = step(kernel).detach().float()
        synchronize(args.device)
        peaks[kernel] = (torch.cuda.max_memory_allocated() - before) / 2**20 if args.device == "cuda" else None
        for _ in range(args.warmup - 1):
            step(kernel)
    times = {kernel: [] for kernel in KERNELS}
    for _ in range(args.repeats):
        for kernel in KERNELS:
            synchronize(args.device)
            start = time.perf_counter()
            step(kernel)
            synchronize(args.device)
            times[kernel].append(time.perf_counter() - start)
    difference = (outputs["sdpa"] - outputs["matmul"]).abs().max().item()
    return {kernel: (1000 * statistics.median(times[kernel]), peaks[kernel]) for kernel in KERNELS}, difference


def machine(device: str) -> str:
    gpu = [torch.cuda.get_device_name()] if device == "cuda" else []
    return machine_line(*gpu, f"torch {torch.__version__}", f"{torch.get_num_threads()} threads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="local model shapes (default: gpu-350m on CUDA, tiny elsewhere)")
    parser.add_argument("--batch", type=int, help="B, sequences of the model (default: the preset's)")
    parser.add_argument("--patches", type=int, help="K, patches per sequence (default: the preset's)")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[4, 8, 16], help="values of P")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per kernel and shape; the median is shown")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per kernel and shape first")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                        help="bf16 autocast (default: on CUDA only)")
    args = parser.parse_args()
    args.preset = args.preset or ("gpu-350m" if args.device == "cuda" else "tiny")
    args.bf16 = args.device == "cuda" if args.bf16 is None else args.bf16
    args.warmup = max(1, args.warmup)
    preset = {**PRESETS[args.preset], **{k: getattr(args, k) for k in ("batch", "patches") if getattr(args, k)}}

    print(f"machine: {machine(args.device)}")
    print(f"local model ({args.preset}): {preset['local_dim']} wide × {preset['local_layers']} layers "
          f"({preset['local_heads']} heads), B·K = {preset['batch']}·{preset['patches']} patches, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {args.device}; forward + backward, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    memory = args.device == "cuda"
    print(f"\n{'P':>3}{'r':>4}{'sdpa ms':>10}{'matmul ms':>11}{'sdpa/matmul':>13}{'max |Δ|':>10}"
          + (f"{'sdpa MiB':>10}{'matmul MiB':>12}" if memory else ""))
    for P in args.patch_sizes:
        for r in sorted({0, P}):
            result, difference = measure(args, preset, P, r)
            (sdpa, sdpa_peak), (matmul, matmul_peak) = result["sdpa"], result["matmul"]
            print(f"{P:>3}{r:>4}{sdpa:>10.2f}{matmul:>11.2f}{sdpa / matmul:>13.2f}{difference:>10.1e}"
                  + (f"{sdpa_peak:>10.0f}{matmul_peak:>12.0f}" if memory else ""))
    print("\nms: one forward + backward of the local stack; sdpa/matmul > 1: matmul is faster; max |Δ|: the\n"
          "largest difference of the two kernels' outputs"
          + ("; MiB: the rise of allocated memory during one step." if memory else "."))


if __name__ == "__main__":
    main()
