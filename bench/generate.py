"""Generation speed in the paper's Table 9 setting: MegaByte against a transformer, both timed here.

Table 9 generates 8192 bytes of PG-19 with MegaByte (global 1.3B, local 218M, P=8, an 8192-byte
context) and a 350M transformer (a 1024-byte context, so it slides its window as it goes) and
reports 93 s against 132 s: 1.42×. Batch size and hardware are not given, so both batch 1 and a
larger batch are timed. Weights are random: the work per byte does not depend on them, and
sampling runs the same steps at any temperature (stop_at_boundary is off so that every row
produces every byte).

    python bench/generate.py                                  # CPU: the tiny twins, a few minutes
    python bench/generate.py --megabyte text-split-1.3b --transformer text-transformer-350m \\
        --new-bytes 8192 --batch-sizes 1 16                   # Table 9 on a GPU (bf16)

Each row: new bytes per second (all rows of the batch together), prefill and window slides
included, after one untimed warm-up call of --warmup-bytes; "× transformer" is the row's bytes/s
over the transformer's at the same batch size. On CUDA MegaByte is also timed with its local step
as CUDA graphs (generate(..., cuda_graphs=True): one launch per byte; capture counted in its time).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import machine, parse_setting, synchronize  # noqa: E402  (bench/: this runs as a script)
from model import PRESETS, MegaByteConfig, build_model, generate  # noqa: E402


def bytes_per_second(net, batch_size: int, new_bytes: int, warmup_bytes: int, cuda_graphs: bool) -> float:
    """New bytes per second of one generate call from an empty prompt, after a warm-up call
    (graphs are captured anew in every call: their capture is part of the time)."""
    device = next(net.parameters()).device
    prompt = torch.zeros(batch_size, 0, dtype=torch.long, device=device)  # (B, 0): from nothing
    options = dict(seed=0, stop_at_boundary=False, cuda_graphs=cuda_graphs)
    generate(net, prompt, warmup_bytes, **options)  # kernels chosen, caches allocated
    synchronize(device)
    started = time.perf_counter()
    out = generate(net, prompt, new_bytes, **options)  # (B, new_bytes)
    synchronize(device)
    assert out.shape == (batch_size, new_bytes)
    return batch_size * new_bytes / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabyte", default="tiny", help="MegaByte preset (Table 9: text-split-1.3b)")
    parser.add_argument("--megabyte-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="MegaByte config overrides, e.g. local_cross_patch=8")
    parser.add_argument("--transformer", default="tiny-transformer",
                        help="transformer preset (Table 9: text-transformer-350m)")
    parser.add_argument("--new-bytes", type=int, default=2048, help="bytes generated per row (Table 9: 8192)")
    parser.add_argument("--warmup-bytes", type=int, default=64, help="untimed bytes generated first")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="rows generated at once")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction,
                        help="also time MegaByte with its local step as CUDA graphs (default: on CUDA)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the weights themselves, not autocast
    graphs = device.type == "cuda" if args.cuda_graphs is None else args.cuda_graphs
    # label → (preset, with CUDA graphs)
    runs = {args.megabyte: (args.megabyte, False), args.transformer: (args.transformer, False)}
    if graphs:
        runs[f"{args.megabyte} +graphs"] = (args.megabyte, True)
    configs = {args.megabyte: MegaByteConfig.from_dict({**PRESETS[args.megabyte].to_dict(),
                                                         **dict(map(parse_setting, args.megabyte_set))}),
               args.transformer: PRESETS[args.transformer]}
    nets = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        nets[name] = build_model(config).to(device, dtype).eval()
    print(f"machine: {machine(f'torch {torch.__version__}', device.type, str(dtype).replace('torch.', ''))}")
    if args.megabyte_set:
        print(f"{args.megabyte} with {' '.join(args.megabyte_set)}")
    print(f"{args.new_bytes} new bytes per row from an empty prompt, warm-up {args.warmup_bytes} bytes")
    print(f"{'model':<24}{'params':>9}{'context':>9}{'batch':>7}{'bytes/s':>12}{'× transformer':>15}")
    for batch_size in args.batch_sizes:
        rates = {label: bytes_per_second(nets[name], batch_size, args.new_bytes, args.warmup_bytes, with_graphs)
                 for label, (name, with_graphs) in runs.items()}
        for label, (name, _) in runs.items():
            net = nets[name]
            print(f"{label:<24}{net.num_parameters() / 1e6:>8.1f}M{net.config.seq_len:>9}{batch_size:>7}"
                  f"{rates[label]:>12,.0f}{rates[label] / rates[args.transformer]:>15.2f}")


if __name__ == "__main__":
    main()
