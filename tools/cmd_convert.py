"""`megabyte convert {text,image,audio,merge}`: raw corpora → byte-stream shards.

A flag's default is the field's default in the settings it fills (ImageSettings, AudioSettings,
ConvertOptions): a dataclass keeps each field's default as a class attribute.
"""

import argparse
from pathlib import Path

from pipeline.convert.audio import AudioConverter, AudioSettings, audio_files
from pipeline.convert.driver import ConvertOptions, convert
from pipeline.convert.image import LAYOUTS, RESIZE_METHODS, ImageSettings, build_image_converter
from pipeline.convert.inputs import expand_sources, parse_part, parse_size
from pipeline.convert.merge import merge_parts
from pipeline.convert.text import TextConverter
from pipeline.format import storage
from pipeline.format.audio_codec import ENCODINGS
from pipeline.format.manifest import PAYLOAD_NAMES
from tools.arguments import bounded

MAX_SIDE = 8192  # --size: an 8192×8192 image is 192 MiB of bytes, one sample
MAX_WORKERS = 1024


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert raw corpora into byte-stream shards")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    text = kinds.add_parser("text", help="plain-text files (one document each) and JSONL; "
                                          ".gz/.zst/.xz are read transparently")
    text.add_argument("sources", nargs="+", metavar="SRC",
                      help="files, directories (searched recursively) or quoted globs")
    text.add_argument("--field", default="text", help="JSONL field holding the document (default: text)")
    add_source_filters(text, "every file")
    add_output_flags(text, default_name="text")
    text.set_defaults(func=cmd_convert_text)

    image = kinds.add_parser("image", help="ImageNet layouts (ImageFolder, images + labels, "
                                            "downsampled .npz) → S×S raw RGB bytes")
    image.add_argument("sources", nargs="+", metavar="SRC",
                       help="image files, folders (searched recursively) and globs, in any mix; "
                            "one ImageFolder (SRC/<synset>/*.JPEG); or .npz files / a folder of them")
    image.add_argument("--size", type=bounded(int, 1, MAX_SIDE), required=True, metavar="S",
                       help=f"side of the stored square images in pixels, 1 to {MAX_SIDE} (the paper: "
                            "64, 256, 640)")
    image.add_argument("--resize", choices=RESIZE_METHODS, default=ImageSettings.resize,
                       help="crop: shorter side to S (antialiased bicubic), centre crop (default); "
                            "box: whole image to S×S with a box filter, as downsampled ImageNet")
    image.add_argument("--layout", choices=["auto", *LAYOUTS], default="auto",
                       help="auto (default): npz for .npz inputs; folder (ImageFolder) for one "
                            "folder with subfolders and no --labels; else flat (the images as given)")
    image.add_argument("--labels", type=Path, default=None, metavar="FILE",
                       help="labels of flat images: filename,label CSV rows, or one label per line "
                            "for the files in sorted order (ILSVRC2012_validation_ground_truth.txt); "
                            "a label is a synset or an integer id")
    image.add_argument("--classes", type=Path, default=None, metavar="FILE",
                       help="class list, a synset per line: class index = line number, 0-based "
                            "(default: the sorted class folders)")
    image.add_argument("--classes-from", type=Path, default=None, metavar="DIR",
                       help="take the class list from the sorted subfolders of DIR (e.g. train/), "
                            "so that a flat val folder gets the train folder's class indices")
    image.add_argument("--label-ids", type=Path, default=None, metavar="FILE",
                       help="the synset of each integer label id, in id order: a synset per line "
                            "(map_clsloc.txt works) or the ILSVRC2012 devkit's meta.mat "
                            "(default: ids are class indices)")
    image.add_argument("--label-base", type=int, choices=[0, 1], default=1,
                       help="the first integer id in --labels (default: 1, as in ImageNet's ground "
                            "truth; metadata labels are 0-based class indices); .npz labels count from 1")
    image.add_argument("--max-pixels", type=bounded(int, 1, 2**40), default=ImageSettings.max_pixels, metavar="N",
                       help="Pillow's decompression-bomb limit: images over N pixels warn, over 2·N "
                            f"are skipped (default: Pillow's {ImageSettings.max_pixels:,})")
    add_output_flags(image, default_name="image")
    image.set_defaults(func=cmd_convert_image)

    audio = kinds.add_parser("audio", help="audio files soundfile reads (wav, flac, ogg, mp3, aiff…) "
                                            "→ mono PCM bytes at one sample rate")
    audio.add_argument("sources", nargs="+", metavar="SRC",
                       help="files, directories (searched recursively) or quoted globs")
    audio.add_argument("--sample-rate", type=bounded(int, 1, 10**6), default=AudioSettings.sample_rate, metavar="HZ",
                       help=f"target sample rate; others are resampled (default: {AudioSettings.sample_rate})")
    audio.add_argument("--encoding", choices=list(ENCODINGS), default=AudioSettings.encoding,
                       help="pcm16: 16-bit little-endian PCM, the paper's setting; mulaw8: 8-bit µ-law "
                            f"(default: {AudioSettings.encoding})")
    audio.add_argument("--clip-seconds", type=bounded(float, above=0, most=10**6), default=AudioSettings.clip_seconds, metavar="SECONDS",
                       help="cut each file into clips this long (the last one shorter), the offset "
                            "recorded (default: one sample per file)")
    add_source_filters(audio, "the endings of audio formats; '*' takes every file")
    add_output_flags(audio, default_name="audio")
    audio.set_defaults(func=cmd_convert_audio)

    merge = kinds.add_parser("merge", help="join the datasets of `convert --part i/n` runs into one")
    merge.add_argument("parts", nargs="+", type=Path, metavar="PART_DIR", help="one directory per part")
    merge.add_argument("--out", required=True, type=local_directory,
                       help="merged dataset directory: new, empty, or left by an interrupted merge "
                            "of the same parts (rerunning goes on)")
    merge.set_defaults(func=cmd_convert_merge)


def local_directory(text: str) -> Path:
    if storage.is_url(text):
        raise argparse.ArgumentTypeError(f"{text}: merge writes a local directory; upload it after, "
                                         "or convert straight to the URL without --part")
    return Path(text)


def add_source_filters(parser: argparse.ArgumentParser, include_default: str) -> None:
    parser.add_argument("--include", default=None, metavar="GLOB",
                        help=f"inside directories, only files whose name matches GLOB, e.g. '*.py' "
                             f"(default: {include_default})")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="inside directories, skip paths (relative to the directory) matching "
                             "GLOB, e.g. 'site-packages/*'; may be repeated")


def add_output_flags(parser: argparse.ArgumentParser, default_name: str) -> None:
    """Flags every converter shares: where and how shards are written, and how work is split."""
    parser.add_argument("--out", required=True, type=output_location,
                        help="dataset directory (created; rerunning the same command resumes it), "
                             "or a URL (s3://bucket/prefix, gs://…): shards are staged locally and "
                             "uploaded as each is complete, index.json last")
    parser.add_argument("--name", default=default_name,
                        help=f"shard name prefix: NAME-000000.tar (default: {default_name})")
    shard_size = f"{ConvertOptions.shard_bytes >> 20}MiB"
    parser.add_argument("--shard-size", default=shard_size,
                        help=f"target size of one shard file, e.g. 256MiB, 64K (default: {shard_size})")
    parser.add_argument("--compression", choices=list(PAYLOAD_NAMES), default=ConvertOptions.compression,
                        help="payload compression: zstd (<key>.bin.zst) or none (<key>.bin) "
                             f"(default: {ConvertOptions.compression})")
    parser.add_argument("--level", type=bounded(int, 1, 22), default=ConvertOptions.level,
                        help=f"zstd level, 1-22 (default: {ConvertOptions.level})")
    parser.add_argument("--workers", type=bounded(int, 1, MAX_WORKERS), default=ConvertOptions.workers,
                        help="parallel worker processes; 1 converts in this process "
                             f"(default: {ConvertOptions.workers})")
    parser.add_argument("--part", default=None, metavar="I/N",
                        help="convert only part I of N (0-based), a deterministic disjoint subset "
                             "of the inputs; join the parts with `convert merge`")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad input instead of skipping and reporting it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def output_location(text: str) -> Path | str:
    """--out: a URL as it is (one that can be written to), anything else a local path."""
    if text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text}: http(s) URLs are read-only; write to a "
                                         "directory, s3:// or gs://")
    return text if storage.is_url(text) else Path(text)


def run_conversion(args, converter, files: list[Path], modality_arguments: dict) -> int:
    """Turn the shared flags into ConvertOptions, run the converter and print a summary."""
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


def cmd_convert_image(args) -> int:
    settings = ImageSettings(args.size, args.resize, args.max_pixels)
    converter, files, layout = build_image_converter(
        args.sources, settings, layout=args.layout, labels=args.labels, classes=args.classes,
        classes_from=args.classes_from, label_ids=args.label_ids, label_base=args.label_base)
    label_files = {name: None if getattr(args, name) is None else str(getattr(args, name))
                   for name in ("labels", "classes", "classes_from", "label_ids")}
    return run_conversion(args, converter, files,
                          {"size": args.size, "resize": args.resize, "layout": layout,
                           "max_pixels": args.max_pixels, "label_base": args.label_base, **label_files})


def cmd_convert_audio(args) -> int:
    settings = AudioSettings(args.sample_rate, args.encoding, args.clip_seconds)
    files = audio_files(args.sources, args.include, args.exclude)
    return run_conversion(args, AudioConverter(settings), files,
                          {"sample_rate": args.sample_rate, "encoding": args.encoding,
                           "clip_seconds": args.clip_seconds, "include": args.include,
                           "exclude": args.exclude})


def cmd_convert_merge(args) -> int:
    manifest = merge_parts(args.parts, args.out)
    totals = manifest.totals
    print(f"{args.out}: merged {len(args.parts)} parts: {totals['shards']} shards, "
          f"{totals['samples']} samples, {totals['skipped']} inputs skipped")
    return 0
