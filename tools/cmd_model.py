"""`megabyte eval`, `megabyte export`, `megabyte generate`: use a trained model without DeepSpeed.

MODEL is an exported .safetensors file, a run directory (its newest complete checkpoint) or one
step-NNNNNN checkpoint folder.
"""

import json
import sys
from functools import partial
from pathlib import Path

from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import write_atomically
from tools.arguments import bounded
from tools.outputs import check_output_file

MODEL_HELP = "an exported .safetensors file, a run directory, or a step-NNNNNN checkpoint folder"
DEVICE_HELP = "torch device, e.g. cpu or cuda:0 (default: cuda when there is one)"
MAX_BATCH = 65536  # --batch-size: windows in one forward
MAX_GENERATED = 2**24  # --bytes: 16 MiB, hours of sampling already
TRUST_HELP = ("read a checkpoint's DeepSpeed files even if they hold more than plain data (unpickling "
              "them can run code): only for checkpoints you trust")


def register(subparsers) -> None:
    evaluate = subparsers.add_parser("eval", help="bits per byte over every byte of a dataset: plain, "
                                                  "strided, sliding window")
    evaluate.add_argument("model", type=Path, metavar="MODEL", help=MODEL_HELP)
    evaluate.add_argument("--data", required=True,
                          help="a converted dataset: a directory or a URL (s3://, gs://, http(s)://)")
    evaluate.add_argument("--strided", action="store_true",
                          help="also strided inference (MegaByte §2.3): a second pass shifted by half a "
                               "patch, each byte scored where it sits in the first half of its patch")
    evaluate.add_argument("--sliding", type=bounded(int, least=1), default=None, metavar="STRIDE",
                          help="also sliding windows advancing by STRIDE bytes (≤ the context; "
                               "PerceiverAR: ≤ its latents, and latents/2 unless given)")
    evaluate.add_argument("--batch-size", type=bounded(int, 1, MAX_BATCH), default=8,
                          help=f"windows per forward, 1 to {MAX_BATCH} (default: 8)")
    evaluate.add_argument("--max-bytes", type=bounded(int, least=0), default=0,
                          help="score only the first N ids of the dataset; 0 = all of it (default)")
    evaluate.add_argument("--image-order", choices=["raster", "patch"], default=None,
                          help="byte order of images (default: the order the model was trained on)")
    evaluate.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    evaluate.add_argument("--device", default=None, help=DEVICE_HELP)
    evaluate.add_argument("--no-progress", action="store_true",
                          help="print no progress on stderr (by default: a bar per mode on a terminal, "
                               "elsewhere a line when each mode starts and ends)")
    evaluate.set_defaults(func=cmd_eval)

    export = subparsers.add_parser("export", help="checkpoint (any ZeRO stage) → one safetensors file")
    export.add_argument("checkpoint", type=Path, metavar="CKPT",
                        help="a run directory or a step-NNNNNN checkpoint folder")
    export.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    export.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    export.set_defaults(func=cmd_export)

    generate = subparsers.add_parser("generate", help="generate text (stdout), a picture (PNG) or sound (WAV)")
    generate.add_argument("--model", required=True, type=Path, help=MODEL_HELP)
    prompt = generate.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="text to continue (default: nothing)")
    prompt.add_argument("--prompt-file", type=Path, default=None,
                        help="raw bytes to continue, as the model reads them")
    prompt.add_argument("--prompt-image", type=Path, default=None,
                        help="image models: a picture whose first --keep fraction of bytes is the prompt")
    generate.add_argument("--keep", type=bounded(float, least=0, below=1), default=None,
                          help="with --prompt-image: fraction of the picture's bytes kept, at least 0 "
                               "and below 1 (default: 0.5)")
    generate.add_argument("--bytes", type=bounded(int, 1, MAX_GENERATED), default=512,
                          help=f"bytes to generate for text and audio, 1 to {MAX_GENERATED:,} (images: "
                               "the rest of the picture)")
    generate.add_argument("--temperature", type=bounded(float, least=0), default=1.0,
                          help="0 = greedy (default: 1.0)")
    generate.add_argument("--top-k", type=bounded(int, least=1), default=None,
                          help="sample from the k ≥ 1 likeliest bytes")
    generate.add_argument("--top-p", type=bounded(float, above=0, most=1), default=None,
                          help="nucleus sampling mass, above 0 and at most 1, e.g. 0.95")
    generate.add_argument("--seed", type=bounded(int, 0, 2**64 - 1), default=0,
                          help="sampling seed, 0 to 2**64 - 1 (default: 0)")
    generate.add_argument("--out", type=Path, default=None,
                          help="output file: required for image (.png) and audio (.wav) models; "
                               "text goes to stdout unless given")
    generate.add_argument("--device", default=None, help=DEVICE_HELP)
    generate.add_argument("--cuda-graphs", action="store_true",
                          help="MegaByte on a CUDA device: run its local step (once per byte) as CUDA graphs")
    generate.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    generate.add_argument("--no-progress", action="store_true",
                          help="print no progress on stderr (by default: a bar on a terminal, elsewhere a "
                               "line at the start, one a minute with the bytes/s, and one at the end)")
    generate.set_defaults(func=cmd_generate)


def find_model(path: Path) -> Path:
    """The exported file, or the checkpoint folder checked once (train.export.find_model)."""
    from train.export import find_model  # reads DeepSpeed checkpoints: imported on use

    return find_model(path)


def load_model(found: Path, trust: bool):
    from train.export import load_found

    return load_found(found, trust)


def read_model_header(found: Path):
    """(model config, metadata) without the weights: what the arguments are checked against."""
    from train.export import read_model_header

    return read_model_header(found)


def cmd_eval(args) -> int:
    from train.windows import dataset_ids, dataset_streams, eval_modes, evaluate_streams

    device = pick_device(args.device)
    ids = dataset_ids(args.data, max_ids=args.max_bytes)
    if ids == 0:
        raise DataError(f"{args.data}: the dataset has no bytes to score")
    found = find_model(args.model)
    config, _ = read_model_header(found)
    modes = eval_modes(config, args.strided, args.sliding)
    # the arguments and the data are fine, for this model too: now its weights
    model, metadata = load_model(found, args.trust_checkpoint)
    order = args.image_order or metadata.get("image_order", "raster")
    streams = partial(dataset_streams, args.data, config, order, max_ids=args.max_bytes)
    try:
        results = evaluate_streams(model.to(device), streams, modes, device, args.batch_size,
                                   progress=not args.no_progress, total_ids=ids)
    except ValueError as error:  # samples this model cannot read, e.g. audio frames longer than its context
        raise UsageError(f"{args.data}: {error}") from None
    print_eval(args.data, model, results)
    return 0


def print_eval(data: str, model, results: dict[str, dict]) -> None:
    """The model and the data in one line, then a row per mode: bits per byte, cost, speed."""
    plain, config = results["plain"], model.config
    parameters = sum(p.numel() for p in model.parameters())  # tied weights once
    print(f"{data}: {plain['targets']:,} targets (every byte and document end once), "
          f"{config.architecture}, context {config.seq_len:,}, {parameters:,} parameters")
    print(f"  {'mode':<24} {'bits/byte':>9} {'cost':>6} {'bytes/s':>10}")
    for name, result in results.items():
        print(f"  {name:<24} {result['bpb']:>9.4f} {result['positions'] / plain['positions']:>5.2f}× "
              f"{result['targets'] / result['seconds']:>10,.0f}")


def pick_device(name: str | None):
    """--device → a torch device that exists here (default: cuda when there is one)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cmd_export(args) -> int:
    from train.export import export

    folder = export(args.checkpoint, args.out, args.trust_checkpoint)
    print(f"{args.out}: exported {folder}")
    return 0


def cmd_generate(args) -> int:
    check_generate_args(args)
    from model import generate

    device = pick_device(args.device)
    if args.cuda_graphs and device.type != "cuda":
        raise UsageError(f"--cuda-graphs: needs a CUDA device, and this runs on {device.type} (--device cuda)")
    found = find_model(args.model)
    check_against_model(args, *read_model_header(found))
    model, metadata = load_model(found, args.trust_checkpoint)
    model.to(device)
    modality = metadata.get("modality", "text")
    data_arguments = json.loads(metadata.get("data_arguments", "{}"))
    prompt = read_prompt(args, model, modality, data_arguments, metadata)
    if modality == "image":
        size = data_arguments["size"]
        count = size * size * 3 - len(prompt)
    else:
        count = args.bytes
    if modality == "audio":
        from pipeline.format.audio_codec import DEFAULT_ENCODING, bytes_per_sample

        width = bytes_per_sample(data_arguments.get("encoding", DEFAULT_ENCODING))
        whole = (len(prompt) + count) // width * width - len(prompt)  # down to whole samples,
        count = whole if whole > 0 else whole + width  # or up to one when that leaves nothing
    [new] = generate(model, [prompt], count, temperature=args.temperature, top_k=args.top_k,
                     top_p=args.top_p, seed=args.seed, stop_at_boundary=modality == "text",
                     cuda_graphs=args.cuda_graphs, progress=not args.no_progress)
    write_output(args, modality, data_arguments, metadata, model, prompt + new)
    return 0


def check_generate_args(args) -> None:
    """What can be refused without the model, refused before it is loaded (the numbers' ranges
    were checked as they were parsed)."""
    if args.keep is not None and args.prompt_image is None:
        raise UsageError("--keep is the fraction of --prompt-image kept as the prompt: give --prompt-image")
    if args.out is not None:
        check_output_file(args.out, "--out")


def check_against_model(args, config, metadata: dict) -> None:
    """What the model's config and metadata (its file's header) refuse, refused before its weights
    are loaded."""
    from model import MODELS

    if args.cuda_graphs and not MODELS[config.architecture].decodes_with_cuda_graphs:
        raise UsageError(f"--cuda-graphs: a {config.architecture} model has no local step to capture "
                         "(megabyte and no_global have)")
    modality = metadata.get("modality", "text")
    if modality in ("image", "audio") and args.out is None:
        raise UsageError(f"this is an {modality} model: give --out FILE "
                         f"({'.png' if modality == 'image' else '.wav'})")
    if args.prompt_image is not None and modality != "image":
        raise UsageError("--prompt-image needs an image model")
    if modality == "image":
        size = json.loads(metadata.get("data_arguments", "{}"))["size"]
        if size * size * 3 > config.seq_len:
            raise UsageError(f"a {size}×{size} image is {size * size * 3} bytes, more than the "
                             f"model's context of {config.seq_len}")


def read_prompt(args, model, modality: str, data_arguments: dict, metadata: dict) -> bytes:
    if args.prompt_file is not None:
        try:
            return args.prompt_file.read_bytes()
        except OSError as error:
            raise UsageError(f"{args.prompt_file}: cannot read the prompt ({error.strerror})") from None
    if args.prompt_image is not None:
        import numpy as np
        from PIL import Image

        from pipeline.convert.image import resize_square, to_rgb
        from pipeline.format.scan import to_patch_order

        size = data_arguments["size"]
        try:
            picture = resize_square(to_rgb(Image.open(args.prompt_image)), size,
                                    data_arguments.get("resize", "crop"))
        except OSError as error:
            raise UsageError(f"{args.prompt_image}: cannot read the picture ({error})") from None
        raw = np.asarray(picture, dtype=np.uint8).tobytes()
        if metadata.get("image_order") == "patch":
            raw = to_patch_order(raw, size, model.config.patch_size).tobytes()
        return raw[: int(len(raw) * (0.5 if args.keep is None else args.keep))]
    return args.prompt.encode("utf-8")


def write_output(args, modality: str, data_arguments: dict, metadata: dict, model, data: bytes) -> None:
    if modality == "image":
        from tools.render import bytes_to_image, image_grid

        size = data_arguments["size"]
        pixels = bytes_to_image(data, size, metadata.get("image_order", "raster"), model.config.patch_size)
        write_atomically(args.out, lambda tmp: image_grid([pixels], padding=0).save(tmp, format="PNG"),
                         on_error="usage")
        print(f"{args.out}: {size}×{size} image ({len(data):,} bytes)")
    elif modality == "audio":
        from pipeline.convert.audio import AudioSettings
        from pipeline.format.audio_codec import DEFAULT_ENCODING
        from tools.render import write_wav

        rate = data_arguments.get("sample_rate", AudioSettings.sample_rate)  # the converter's default
        encoding = data_arguments.get("encoding", DEFAULT_ENCODING)
        write_atomically(args.out, lambda tmp: write_wav(tmp, data, encoding, rate), on_error="usage")
        print(f"{args.out}: {encoding} at {rate} Hz ({len(data):,} bytes)")
    elif args.out is not None:
        write_atomically(args.out, lambda tmp: tmp.write_bytes(data), on_error="usage")
        print(f"{args.out}: {len(data):,} bytes")
    else:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.flush()
