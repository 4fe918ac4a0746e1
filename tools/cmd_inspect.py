"""`megabyte inspect {ls,stats,verify,show,render}`: look inside converted datasets."""

import argparse
import json
import sys
from pathlib import Path

from tools import inspect, render
from pipeline.format import storage
from pipeline.format.errors import DataError
from pipeline.format.stats import dataset_stats
from tools.arguments import bounded

MAX_RENDERED = 4096  # --count, --columns: samples in one grid
MAX_SCALE = 16


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="list, summarise, verify and show shards")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add_verb(name: str, help_text: str, func):
        verb = verbs.add_parser(name, help=help_text)
        verb.add_argument("paths", nargs="+", metavar="PATH",
                          help="dataset directories (with index.json) and/or shard .tar files: "
                               "local paths or URLs (s3://, gs://, http(s)://)")
        verb.set_defaults(func=func)
        return verb

    add_verb("ls", "shards with their samples and bytes", cmd_ls)
    stats = add_verb("stats", "totals, sample lengths, byte histogram and entropy", cmd_stats)
    stats.add_argument("--max-samples", type=bounded(int, least=1), default=None,
                       help="look at only the first N samples (default: all)")
    add_verb("verify", "check sha256 of every shard and decode every member; exit 1 on any problem",
             cmd_verify)
    show = add_verb("show", "one sample: its metadata and first bytes", cmd_show)
    which = show.add_mutually_exclusive_group()
    which.add_argument("--key", default=None, help="the sample's key")
    which.add_argument("--index", type=bounded(int, least=0), default=0,
                       help="the sample's position in the dataset, 0-based (default: 0)")
    show.add_argument("--bytes", type=bounded(int, least=0), default=512, help="how many leading bytes to print (default: 512)")
    show.add_argument("--hex", action="store_true", help="print a hexdump instead of text")
    render_verb = add_verb("render", "image samples → one PNG grid, audio samples → WAV files, decoded "
                                     "from the stored bytes", cmd_render)
    render_verb.add_argument("--out", required=True, type=Path, metavar="FILE",
                             help="the PNG to write (images), or a folder for <index>-<key>.wav files (audio; a "
                                  ".wav name for one sample)")
    chosen = render_verb.add_mutually_exclusive_group()
    chosen.add_argument("--count", type=bounded(int, 1, MAX_RENDERED), default=16,
                        help=f"render the first N samples, 1 to {MAX_RENDERED} (default: 16)")
    chosen.add_argument("--indices", type=index_list, default=None, metavar="I,J,…",
                        help="render the samples at these dataset positions, 0-based, e.g. 0,7,42")
    render_verb.add_argument("--columns", type=bounded(int, 1, MAX_RENDERED), default=None,
                             help="images per grid row (default: a near-square grid)")
    render_verb.add_argument("--scale", type=bounded(int, 1, MAX_SCALE), default=1,
                             help=f"enlarge each image this many times (1 to {MAX_SCALE}), nearest "
                                  "neighbour (default: 1)")


def cmd_ls(args) -> int:
    rows = inspect.list_shards(args.paths)
    print(f"{'shard':<40} {'samples':>10} {'payload bytes':>16} {'file bytes':>16}")
    for row in rows:
        name = storage.join(row["dataset"], row["name"]) if row["dataset"] else row["name"]
        print(f"{name:<40} {row['samples']:>10,} {row['payload_bytes']:>16,} {row['file_bytes']:>16,}")
    print(f"{'total (' + str(len(rows)) + ' shards)':<40} {sum(r['samples'] for r in rows):>10,} "
          f"{sum(r['payload_bytes'] for r in rows):>16,} {sum(r['file_bytes'] for r in rows):>16,}")
    return 0


def cmd_stats(args) -> int:
    stats = dataset_stats(args.paths, args.max_samples)
    print(f"samples        {stats.samples:,}")
    print(f"payload bytes  {stats.payload_bytes:,}")
    print(f"modalities     {json.dumps(stats.modalities)}")
    print("sample length  " + "  ".join(f"{k} {v:,}" for k, v in stats.length_percentiles().items()))
    print(f"byte entropy   {stats.entropy_bits:.4f} bits/byte (unigram)")
    print("most common bytes:")
    total = max(int(stats.histogram.sum()), 1)
    as_text = set(stats.modalities) == {"text"}  # pixels and audio bytes are numbers, not letters
    for value in stats.histogram.argsort()[::-1][:16]:
        if stats.histogram[value]:
            print(f"  {byte_label(int(value), as_text):>6}  {stats.histogram[value] / total:8.4%}")
    return 0


def byte_label(value: int, as_text: bool) -> str:
    """A byte value as a character (text: 'a', or 0x0a where it prints as none) or a number."""
    if not as_text:
        return str(value)
    return repr(chr(value)) if 32 <= value < 127 else f"0x{value:02x}"


def cmd_verify(args) -> int:
    result = inspect.verify(args.paths)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.problems:
        raise DataError(f"{len(result.problems)} problems in {result.samples} samples checked")
    print(f"ok: {result.samples} samples verified")
    if result.unchecked:
        print(f"note: {result.unchecked} of them carry no checksum (stored uncompressed, or by format "
              "v1): without index.json only their lengths could be checked")
    return 0


def cmd_show(args) -> int:
    index = None if args.key else args.index
    shard, key, meta, head, length = inspect.find_sample(args.paths, args.key, index, args.bytes)
    print(f"shard  {shard}\nkey    {key}\nmeta   {json.dumps(meta, sort_keys=True)}")
    print(f"first {len(head)} of {length} bytes:")
    if args.hex:
        print(inspect.hexdump(head))
    else:
        sys.stdout.write(head.decode("utf-8", "backslashreplace") + "\n")
    return 0


def index_list(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of indices") from None
    if any(i < 0 for i in indices):
        raise argparse.ArgumentTypeError("indices are 0-based positions, not negative")
    return indices


def cmd_render(args) -> int:
    written, rendered = render.render_samples(args.paths, args.out, args.indices, args.count,
                                              args.columns, args.scale)
    total = inspect.count_samples(args.paths)
    which = (f"those at {','.join(map(str, args.indices))}" if args.indices is not None else
             f"the first {rendered}; --count N or --indices I,J,… choose others")
    files = str(written[0]) if len(written) == 1 else f"{len(written)} files in {written[0].parent}"
    print(f"rendered {rendered} of {total} samples ({which}): wrote {files}")
    return 0
