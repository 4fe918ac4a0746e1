"""The head and loss of a training step, two ways: logits of every position then byte_loss
(the baseline) against the head's fused loss (model/loss.py, what the trainer uses).

Times forward + backward of the head and loss alone, on hidden states (B, T, D) that require a
gradient, and the peak memory each way takes above what was allocated before it (CUDA's max
allocated, or on a CPU the rise of the peak resident set of a fresh process per run).

    python bench/loss.py                                  # CPU, MegaByte 350M's local width
    python bench/loss.py --batch 16 --seq-len 8192 --dim 512 --bf16     # on a GPU
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import machine, peak_memory_mb  # noqa: E402  (bench/: this runs as a script)
from model import ByteHead, byte_loss  # noqa: E402
from model.config import VOCAB_SIZE  # noqa: E402


def run(args) -> dict:
    """One way (args.way) in this process: median ms of --steps timed steps, peak memory rise."""
    device = args.device
    torch.manual_seed(0)
    head = ByteHead(args.dim, VOCAB_SIZE).to(device)
    h = torch.randn(args.batch, args.seq_len, args.dim, device=device, requires_grad=True)  # (B, T, D)
    ids = torch.randint(0, 256, (args.batch, args.seq_len), device=device)  # (B, T)
    before = peak_memory_mb(device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
            loss = head(h, ids)[0] if args.way == "fused" else byte_loss(head(h), ids)
        loss.backward()
        h.grad = head.weight.grad = None

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"ms": statistics.median(times) * 1e3, "memory": peak_memory_mb(device) - before}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=512, help="the head's input width (MegaByte: local_dim)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up (median)")
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--way", choices=("plain", "fused"), help=argparse.SUPPRESS)  # one run, in a fresh process
    args = parser.parse_args()
    if args.way:
        print(json.dumps(run(args)))
        return
    results = {}
    for way in ("plain", "fused"):
        # a fixed mmap threshold: glibc then returns every large block to the system when it is
        # freed, so the peak resident set follows the peak of live tensors (its dynamic threshold
        # would keep freed blocks of up to 32 MiB in the heap)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--way", way],
                             capture_output=True, text=True, check=True, env=env).stdout
        results[way] = json.loads(out.strip().splitlines()[-1])
    print(f"machine: {machine(f'torch {torch.__version__}', args.device)}")
    print(f"head {args.dim} → {VOCAB_SIZE} and loss, forward + backward, B={args.batch} T={args.seq_len}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, median of {args.steps}")
    print(f"{'way':<8}{'ms':>10}{'peak MB':>10}")
    for way, r in results.items():
        print(f"{way:<8}{r['ms']:>10.1f}{r['memory']:>10.0f}")
    plain, fused = results["plain"], results["fused"]
    print(f"fused / plain: time {fused['ms'] / plain['ms']:.2f}×, peak memory "
          f"{fused['memory'] / max(plain['memory'], 1e-9):.2f}×")


if __name__ == "__main__":
    main()
