"""Bits per byte by position inside the patch (the paper's Figure 5), and what strided inference
makes of it: does the loss rise towards the end of a patch, as §2.3 says and strided inference
(scoring each byte where it sits in the first half of its patch) relies on?

    python bench/patch_position.py MODEL --data DIR [--max-bytes N]

MODEL is what `megabyte eval` takes (a run directory, a checkpoint or an exported file) of a model
with patches. The data is read as `megabyte eval` reads it, in plain windows of the context; each
byte's loss is added to the bin of its offset in its patch (0 … P−1).
"""

import argparse
import sys
from functools import partial
from pathlib import Path

# the repository first: bench/train.py would otherwise shadow the package `train`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from train.evaluate import bpb, target_nats  # noqa: E402
from train.export import load_any  # noqa: E402
from train.windows import dataset_streams  # noqa: E402


def by_offset(model, data: str, image_order: str, max_ids: int) -> list[tuple[float, int]]:
    """[(bits per byte, targets)] for each offset 0 … P−1 inside a patch."""
    config = model.config
    T, P = config.seq_len, config.patch_size
    nats, counts = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
    streams = partial(dataset_streams, data, config, image_order, max_ids=max_ids)
    with torch.no_grad():
        for stream in streams():
            ids = torch.cat([torch.as_tensor(piece, dtype=torch.long) for piece in stream])
            for start in range(0, len(ids), T):
                window = ids[start:start + T]
                window = torch.nn.functional.pad(window, (0, T - len(window)), value=config.pad_id)[None]
                loss, counted = target_nats(model(window), window)  # (1, T) each
                offsets = torch.arange(T) % P
                nats.index_add_(0, offsets, (loss[0] * counted[0]).double())
                counts.index_add_(0, offsets, counted[0].double())
    return [(bpb(n, int(c)), int(c)) for n, c in zip(nats.tolist(), counts.tolist())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-bytes", type=int, default=0, help="score only the first N ids (0 = all)")
    args = parser.parse_args()
    model, metadata = load_any(args.model)
    rows = by_offset(model, args.data, metadata.get("image_order", "raster"), args.max_bytes)
    print(f"{args.model} on {args.data}: bits per byte by offset inside the patch (P = {len(rows)})")
    for offset, (value, count) in enumerate(rows):
        print(f"  {offset:>3}  {value:.4f}  ({count:,} bytes)")
    half = len(rows) // 2
    first = sum(v * c for v, c in rows[:half]) / sum(c for _, c in rows[:half])
    second = sum(v * c for v, c in rows[half:]) / sum(c for _, c in rows[half:])
    print(f"  first half {first:.4f}, second half {second:.4f}")


if __name__ == "__main__":
    main()
