"""Benchmark: MegaByte against megabyte-pytorch (the peer package), the byte-transformer and
PerceiverAR baselines, and SpaceByte.

    python bench/model.py                       # defaults: a few minutes on a 2-core CPU
    python bench/model.py --seq-lens 2048 8192 --global-dim 1024 --global-layers 8 --steps 5
    python bench/model.py --profile             # where the training step spends its time

(a) training bytes/s (forward + backward + AdamW step) at each T: ours, megabyte-pytorch with the
    same widths, depths, heads, P and T, our two baselines at an equal parameter count (the
    byte transformer over all T bytes, PerceiverAR with --latents latents), and SpaceByte at
    MegaByte's training FLOPs per byte (its widths, global blocks every 6 bytes on average);
(b) generation bytes/s, N new bytes after an L-byte prompt, prefill included: ours with KV caches,
    megabyte-pytorch's generate (it reruns the full forward per byte, so it is timed on fewer
    bytes, --peer-new-bytes, and its per-byte rate reported) and the baselines and SpaceByte with
    their caches (PerceiverAR's decoder runs again over all latents for every byte once the prompt
    is longer than its latents: the window of latents slides; SpaceByte's global blocks run at the
    word boundaries, so the prompt is English prose (this text, repeated: a boundary every ~6.2
    bytes), and the untrained model's new bytes (random: one boundary in ~4) until its T/6 global
    positions run out, when its window slides);
(c) peak memory of each run: the rise of the process's peak RSS (CPU) or max allocated (CUDA).
Each run is a fresh subprocess, so peak memory is its own. Needs `pip install megabyte-pytorch`
(the `bench` extra) for the peer columns; without it they are skipped.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import equal_size_baseline, machine as machine_line, peak_memory_mb, synchronize  # noqa: E402  (bench/)
from model import MegaByteConfig, build_model, generate  # noqa: E402
from model.flops import training_flops_per_byte  # noqa: E402


def megabyte_config(args, seq_len: int) -> MegaByteConfig:
    return MegaByteConfig(seq_len=seq_len, patch_size=args.patch_size, global_dim=args.global_dim,
                          global_layers=args.global_layers, global_heads=args.global_heads, local_dim=args.local_dim,
                          local_layers=args.local_layers, local_heads=args.local_heads, dropout=0.0)


def equal_flops_spacebyte(config: MegaByteConfig) -> MegaByteConfig:
    """SpaceByte with MegaByte's widths, heads and local depth (its reference's defaults otherwise:
    T/6 global positions, a window of local_dim bytes) and the global depth whose training FLOPs
    per byte are nearest to MegaByte's."""
    target = training_flops_per_byte(config)
    candidates = []
    for layers in range(1, 65):
        spacebyte = MegaByteConfig(architecture="spacebyte", patch_size=1, seq_len=config.seq_len,
                                   global_dim=config.global_dim, global_layers=layers,
                                   global_heads=config.global_heads, local_dim=config.local_dim,
                                   local_layers=config.local_layers, local_heads=config.local_heads, dropout=0.0)
        candidates.append((abs(training_flops_per_byte(spacebyte) - target), layers, spacebyte))
    return min(candidates, key=lambda c: c[:2])[2]


def peer_model(config: MegaByteConfig, seq_len: int):
    """megabyte-pytorch's MEGABYTE with our widths, depths and heads (its fastest attention path)."""
    from MEGABYTE_pytorch import MEGABYTE
    from MEGABYTE_pytorch.megabyte import Transformer
    head_dim = config.global_dim // config.global_heads
    model = MEGABYTE(num_tokens=config.vocab_size, pad_id=config.pad_id, dim=(config.global_dim, config.local_dim),
                     depth=(config.global_layers, config.local_layers),
                     max_seq_len=(seq_len // config.patch_size, config.patch_size),
                     dim_head=head_dim, heads=config.global_heads, pos_emb=True, flash_attn=True)
    # it gives both stages the same heads: rebuild its local stage with ours, from its own class
    model.transformers[1] = Transformer(dim=config.local_dim, layers=config.local_layers,
                                        dim_head=config.local_dim // config.local_heads, heads=config.local_heads,
                                        rel_pos=False, flash_attn=True)
    return model


def baseline_or_megabyte(args, impl: str, seq_len: int) -> MegaByteConfig:
    config = megabyte_config(args, seq_len)
    if impl == "baseline":
        return equal_size_baseline(config)
    if impl == "perceiver_ar":
        return equal_size_baseline(config, "perceiver_ar", args.latents)
    if impl == "spacebyte":
        return equal_flops_spacebyte(config)
    return config  # ours, and the peer's widths


BASELINES = ("baseline", "perceiver_ar", "spacebyte")  # sized to match ours: their depth is printed


def run_one(job: dict) -> dict:
    """One measurement in this (fresh) process."""
    args = argparse.Namespace(**job["args"])
    device = args.device
    torch.manual_seed(0)
    memory_before = peak_memory_mb(device)
    if job["kind"] == "train":
        config = baseline_or_megabyte(args, job["impl"], job["seq_len"])
        model = peer_model(config, job["seq_len"]) if job["impl"] == "peer" else build_model(config)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, 256, (args.batch, job["seq_len"]), device=device)

        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(ids, return_loss=True) if job["impl"] == "peer" else model(ids, loss=True)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()  # warm-up: allocations, kernel choice
        profile = ""
        if args.profile and job["impl"] not in BASELINES:
            with torch.profiler.profile() as prof:
                step()
            profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
        times = []
        for _ in range(args.steps):  # the fastest step, as timeit: others' load only ever slows a step
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        return dict(rate=args.batch * job["seq_len"] / seconds, seconds=seconds, params=count(model),
                    memory=peak_memory_mb(device) - memory_before, profile=profile, layers=config.global_layers)

    # generation: one prompt of args.prompt bytes
    new_bytes = args.peer_new_bytes if job["impl"] == "peer" else args.new_bytes
    total = args.prompt + new_bytes
    total += -total % args.patch_size
    config = baseline_or_megabyte(args, job["impl"], total)
    model = peer_model(config, total) if job["impl"] == "peer" else build_model(config)
    model.to(device).eval()
    prompt = text_prompt(args.prompt).to(device)
    start = time.perf_counter()
    with torch.no_grad():
        if job["impl"] == "peer":
            with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
                out = model.generate(prompt)
            new_bytes = out.numel() - args.prompt
        else:
            out = generate(model, prompt, new_bytes, temperature=1.0, seed=0, stop_at_boundary=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    assert out.numel() == args.prompt + new_bytes
    return dict(rate=new_bytes / seconds, seconds=seconds, params=count(model),
                memory=peak_memory_mb(device) - memory_before, new_bytes=new_bytes, layers=config.global_layers)


def text_prompt(length: int) -> torch.Tensor:
    """(1, length) bytes of English prose: this module's docstring, repeated."""
    text = __doc__.encode()
    return torch.tensor(list((text * (length // len(text) + 1))[:length]))[None]


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def spawn(job: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark run {job['kind']}/{job['impl']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of(repeats: int, impls: list[str], job: dict) -> dict[str, dict]:
    """Each implementation's fastest of `repeats` runs, taken in turns so that a burst of load from
    elsewhere on the machine does not land on one implementation only."""
    best = {}
    for _ in range(repeats):
        for impl in impls:
            result = spawn({**job, "impl": impl})
            if impl not in best or result["rate"] > best[impl]["rate"]:
                best[impl] = result
    return best


def machine() -> str:
    gpu = [torch.cuda.get_device_name()] if torch.cuda.is_available() else []
    return machine_line(*gpu, f"torch {torch.__version__}", f"{torch.get_num_threads()} threads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[2048, 8192], help="training sequence lengths T")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--global-dim", type=int, default=512, help="global width P·D_G")
    parser.add_argument("--global-layers", type=int, default=4)
    parser.add_argument("--global-heads", type=int, default=8)
    parser.add_argument("--local-dim", type=int, default=256)
    parser.add_argument("--local-layers", type=int, default=2)
    parser.add_argument("--local-heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3,
                        help="timed training steps per run, after one warm-up; the fastest is reported")
    parser.add_argument("--prompt", type=int, default=8000, help="prompt bytes for the generation runs")
    parser.add_argument("--new-bytes", type=int, default=512)
    parser.add_argument("--latents", type=int, default=1024,
                        help="PerceiverAR's latents (the paper's text runs: 1024), at most T")
    parser.add_argument("--peer-new-bytes", type=int, default=8, help="bytes timed for megabyte-pytorch's generate")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every measurement this many times, interleaved, and keep each one's best")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="train under bf16 autocast")
    parser.add_argument("--skip-peer", action="store_true", help="leave out megabyte-pytorch")
    parser.add_argument("--skip", nargs="*", default=[], choices=["baseline", "perceiver_ar", "spacebyte"],
                        help="leave out these of our other architectures")
    parser.add_argument("--profile", action="store_true",
                        help="print the top ops of one (untimed) training step of ours and of megabyte-pytorch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(json.loads(args.worker))))
        return
    job_args = {k: v for k, v in vars(args).items() if k != "worker"}
    impls = [impl for impl in ("megabyte", "baseline", "perceiver_ar", "spacebyte") if impl not in args.skip]
    if not args.skip_peer:
        try:
            import MEGABYTE_pytorch  # noqa: F401
            impls.insert(1, "peer")
        except ImportError:
            print("megabyte-pytorch is not installed (pip install megabyte-pytorch): peer columns skipped")
    names = {"megabyte": "ours", "peer": "megabyte-pytorch", "baseline": "baseline (equal size)",
             "perceiver_ar": f"PerceiverAR N={args.latents} (equal size)", "spacebyte": "SpaceByte (equal FLOPs/byte)"}
    print(f"machine: {machine()}")
    print(f"MegaByte: P={args.patch_size} global {args.global_dim}×{args.global_layers} ({args.global_heads} heads), "
          f"local {args.local_dim}×{args.local_layers} ({args.local_heads} heads), batch {args.batch}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {args.device}")
    print(f"\n{'run':<52}{'params':>9}{'bytes/s':>11}{'s/step':>9}{'peak MB':>9}{'ours ×':>9}")
    profiles = []
    for seq_len in args.seq_lens:
        results = best_of(args.repeats, impls, dict(kind="train", seq_len=seq_len, args=job_args))
        for impl, r in results.items():
            label = f"train T={seq_len} {names[impl]}" + (f" L={r['layers']}" if impl in BASELINES else "")
            ratio = results["megabyte"]["rate"] / r["rate"]
            print(f"{label:<52}{r['params'] / 1e6:>8.2f}M{r['rate']:>11.0f}{r['seconds']:>9.2f}"
                  f"{r['memory']:>9.0f}{ratio:>9.2f}")
            if r["profile"]:
                profiles.append((f"train T={seq_len} {names[impl]}", r["profile"]))
    results = best_of(args.repeats, impls, dict(kind="generate", args=job_args))
    for impl, r in results.items():
        label = f"generate {r['new_bytes']} after {args.prompt} {names[impl]}"
        ratio = results["megabyte"]["rate"] / r["rate"]
        print(f"{label:<52}{r['params'] / 1e6:>8.2f}M{r['rate']:>11.1f}{r['seconds']:>9.2f}"
              f"{r['memory']:>9.0f}{ratio:>9.2f}")
    print("\nbytes/s: training bytes per second (forward + backward + AdamW), or new bytes per second with\n"
          "the prompt's prefill included; s/step: seconds per training step, or for the whole generate call;\n"
          "peak MB: rise of peak memory during the run; ours ×: our MegaByte's bytes/s over this row's.")
    for label, table in profiles:
        print(f"\nprofile of one training step, {label}:\n{table}")


if __name__ == "__main__":
    main()
