"""`megabyte convert {text,merge}`: raw corpora → byte-stream shards."""

import argparse
import logging
from pathlib import Path

from pipeline.convert import ConvertOptions, convert, expand_sources, parse_part, parse_size
from pipeline.merge import merge_parts
from pipeline.text import TextConverter


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert raw corpora into byte-stream shards")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    text = kinds.add_parser("text", help="plain-text files (one document each) and JSONL; "
                                          ".gz/.zst/.xz are read transparently")
    text.add_argument("sources", nargs="+", metavar="SRC",
                      help="files, directories (searched recursively) or quoted globs")
    text.add_argument("--field", default="text", help="JSONL field holding the document (default: text)")
    text.add_argument("--include", default=None, metavar="GLOB",
                      help="inside directories, only files whose name matches GLOB, e.g. '*.py' "
                           "(default: every file)")
    text.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="inside directories, skip paths (relative to the directory) matching "
                           "GLOB, e.g. 'site-packages/*'; may be repeated")
    add_output_flags(text, default_name="text")
    text.set_defaults(func=cmd_convert_text)

    merge = kinds.add_parser("merge", help="join the datasets of `convert --part i/n` runs into one")
    merge.add_argument("parts", nargs="+", type=Path, metavar="PART_DIR", help="one directory per part")
    merge.add_argument("--out", required=True, type=Path, help="merged dataset directory (new or empty)")
    merge.set_defaults(func=cmd_convert_merge)


def add_output_flags(parser: argparse.ArgumentParser, default_name: str) -> None:
    """Flags every converter shares: where and how shards are written, and how work is split."""
    parser.add_argument("--out", required=True, type=Path,
                        help="dataset directory (created; rerunning the same command resumes it)")
    parser.add_argument("--name", default=default_name,
                        help=f"shard name prefix: NAME-000000.tar (default: {default_name})")
    parser.add_argument("--shard-size", default="256MiB",
                        help="target size of one shard file, e.g. 256MiB, 64K (default: 256MiB)")
    parser.add_argument("--compression", choices=["zstd", "none"], default="zstd",
                        help="payload compression: zstd (<key>.bin.zst) or none (<key>.bin)")
    parser.add_argument("--level", type=int, default=3, help="zstd level, 1-22 (default: 3)")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel worker processes; 1 converts in this process (default: 1)")
    parser.add_argument("--part", default=None, metavar="I/N",
                        help="convert only part I of N (0-based), a deterministic disjoint subset "
                             "of the inputs; join the parts with `convert merge`")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad input instead of skipping and reporting it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_conversion(args, converter, files: list[Path], modality_arguments: dict) -> int:
    """Turn the shared flags into ConvertOptions, run the converter and print a summary."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    part = parse_part(args.part)
    arguments = {
        "modality": converter.modality,
        "sources": list(args.sources),
        "name": args.name,
        "shard_size": args.shard_size,
        "compression": args.compression,
        "level": args.level,
        "part": args.part,
        **modality_arguments,
    }
    options = ConvertOptions(out=args.out, name=args.name, shard_bytes=parse_size(args.shard_size),
                             compression=args.compression, level=args.level, workers=args.workers,
                             part=part, strict=args.strict, progress=not args.no_progress)
    manifest = convert(converter, files, options, arguments)
    totals = manifest.totals
    print(f"{args.out}: {totals['shards']} shards, {totals['samples']} samples, "
          f"{totals['payload_bytes']:,} payload bytes in {totals['file_bytes']:,} file bytes, "
          f"{totals['skipped']} inputs skipped")
    return 0


def cmd_convert_text(args) -> int:
    files = expand_sources(args.sources, args.include, args.exclude)
    return run_conversion(args, TextConverter(field=args.field), files,
                          {"field": args.field, "include": args.include, "exclude": args.exclude})


def cmd_convert_merge(args) -> int:
    manifest = merge_parts(args.parts, args.out)
    totals = manifest.totals
    print(f"{args.out}: merged {len(args.parts)} parts: {totals['shards']} shards, "
          f"{totals['samples']} samples, {totals['skipped']} inputs skipped")
    return 0
