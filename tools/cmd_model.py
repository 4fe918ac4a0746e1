"""`megabyte eval`, `megabyte export`, `megabyte generate`: use a trained model without DeepSpeed.

MODEL is an exported .safetensors file, a run directory (its newest complete checkpoint) or one
step-NNNNNN checkpoint folder.
"""

import json
import sys
from pathlib import Path

from pipeline.format.errors import UsageError

MODEL_HELP = "an exported .safetensors file, a run directory, or a step-NNNNNN checkpoint folder"


def register(subparsers) -> None:
    evaluate = subparsers.add_parser("eval", help="bits per byte over every byte of a dataset: plain, "
                                                  "strided, sliding window")
    evaluate.add_argument("model", type=Path, metavar="MODEL", help=MODEL_HELP)
    evaluate.add_argument("--data", required=True, type=Path, help="a converted dataset directory")
    evaluate.add_argument("--strided", action="store_true",
                          help="also strided inference (MegaByte §2.3): a second pass shifted by half a "
                               "patch, each byte scored where it sits in the first half of its patch")
    evaluate.add_argument("--sliding", type=int, default=None, metavar="STRIDE",
                          help="also sliding windows advancing by STRIDE bytes (≤ the context; "
                               "PerceiverAR: ≤ its latents, and latents/2 unless given)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="windows per forward (default: 8)")
    evaluate.add_argument("--max-bytes", type=int, default=0,
                          help="score only the first N ids of the dataset; 0 = all of it (default)")
    evaluate.add_argument("--image-order", choices=["raster", "patch"], default=None,
                          help="byte order of images (default: the order the model was trained on)")
    evaluate.add_argument("--device", default=None,
                          help="torch device, e.g. cpu or cuda:0 (default: cuda when there is one)")
    evaluate.set_defaults(func=cmd_eval)

    export = subparsers.add_parser("export", help="checkpoint (any ZeRO stage) → one safetensors file")
    export.add_argument("checkpoint", type=Path, metavar="CKPT",
                        help="a run directory or a step-NNNNNN checkpoint folder")
    export.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    export.set_defaults(func=cmd_export)

    generate = subparsers.add_parser("generate", help="generate text (stdout), a picture (PNG) or sound (WAV)")
    generate.add_argument("--model", required=True, type=Path, help=MODEL_HELP)
    prompt = generate.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="text to continue (default: nothing)")
    prompt.add_argument("--prompt-file", type=Path, default=None,
                        help="raw bytes to continue, as the model reads them")
    prompt.add_argument("--prompt-image", type=Path, default=None,
                        help="image models: a picture whose first --keep fraction of bytes is the prompt")
    generate.add_argument("--keep", type=float, default=0.5,
                          help="with --prompt-image: fraction of the picture's bytes kept (default: 0.5)")
    generate.add_argument("--bytes", type=int, default=512,
                          help="bytes to generate for text and audio (images: the rest of the picture)")
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1.0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest bytes")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, e.g. 0.95")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    generate.add_argument("--out", type=Path, default=None,
                          help="output file: required for image (.png) and audio (.wav) models; "
                               "text goes to stdout unless given")
    generate.set_defaults(func=cmd_generate)


def load_model(path: Path):
    from train.export import load_any  # reads DeepSpeed checkpoints: imported on use

    return load_any(path)


def cmd_eval(args) -> int:
    import torch

    from train.windows import dataset_streams, eval_modes, evaluate_streams

    if args.batch_size < 1 or args.max_bytes < 0:
        raise UsageError("--batch-size must be at least 1 and --max-bytes at least 0")
    model, metadata = load_model(args.model)
    config = model.config
    modes = eval_modes(config, args.strided, args.sliding)
    order = args.image_order or metadata.get("image_order", "raster")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = evaluate_streams(model.to(device),
                               lambda: dataset_streams(args.data, config, order, max_ids=args.max_bytes),
                               modes, device, args.batch_size)
    plain = results["plain"]
    print(f"{args.data}: {plain['targets']:,} targets (every byte and document end once), "
          f"{config.architecture}, context {config.seq_len:,}")
    print(f"  {'mode':<24} {'bits/byte':>9} {'cost':>6}")
    for name, result in results.items():
        print(f"  {name:<24} {result['bpb']:>9.4f} {result['positions'] / plain['positions']:>5.2f}×")
    return 0


def cmd_export(args) -> int:
    from train.export import export

    folder = export(args.checkpoint, args.out)
    print(f"{args.out}: exported {folder}")
    return 0


def cmd_generate(args) -> int:
    from model import generate

    model, metadata = load_model(args.model)
    modality = metadata.get("modality", "text")
    data_arguments = json.loads(metadata.get("data_arguments", "{}"))
    if modality in ("image", "audio") and args.out is None:
        raise UsageError(f"this is an {modality} model: give --out FILE "
                         f"({'.png' if modality == 'image' else '.wav'})")
    prompt = read_prompt(args, model, modality, data_arguments, metadata)
    if modality == "image":
        size = data_arguments["size"]
        count = size * size * 3 - len(prompt)
        if size * size * 3 > model.config.seq_len:
            raise UsageError(f"a {size}×{size} image is {size * size * 3} bytes, more than the "
                             f"model's context of {model.config.seq_len}")
    else:
        count = args.bytes
    if modality == "audio" and data_arguments.get("encoding", "pcm16") == "pcm16":
        count -= (len(prompt) + count) % 2  # whole 16-bit samples
    [new] = generate(model, [prompt], count, temperature=args.temperature, top_k=args.top_k,
                     top_p=args.top_p, seed=args.seed, stop_at_boundary=modality == "text")
    write_output(args, modality, data_arguments, metadata, model, prompt + new)
    return 0


def read_prompt(args, model, modality: str, data_arguments: dict, metadata: dict) -> bytes:
    if args.prompt_file is not None:
        try:
            return args.prompt_file.read_bytes()
        except OSError as error:
            raise UsageError(f"{args.prompt_file}: cannot read the prompt ({error.strerror})") from None
    if args.prompt_image is not None:
        if modality != "image":
            raise UsageError("--prompt-image needs an image model")
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
        return raw[: int(len(raw) * args.keep)]
    return args.prompt.encode("utf-8")


def write_output(args, modality: str, data_arguments: dict, metadata: dict, model, data: bytes) -> None:
    if modality == "image":
        from tools.render import bytes_to_image, image_grid

        size = data_arguments["size"]
        pixels = bytes_to_image(data, size, metadata.get("image_order", "raster"), model.config.patch_size)
        image_grid([pixels], padding=0).save(args.out, format="PNG")
        print(f"{args.out}: {size}×{size} image ({len(data):,} bytes)")
    elif modality == "audio":
        from tools.render import write_wav

        rate, encoding = data_arguments.get("sample_rate", 16000), data_arguments.get("encoding", "pcm16")
        write_wav(args.out, data, encoding, rate)
        print(f"{args.out}: {encoding} at {rate} Hz ({len(data):,} bytes)")
    elif args.out is not None:
        args.out.write_bytes(data)
        print(f"{args.out}: {len(data):,} bytes")
    else:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.flush()

