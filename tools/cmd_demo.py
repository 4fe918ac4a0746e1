"""`megabyte demo`: the main job end to end on the built-in corpus, in minutes on a CPU.

    Python stdlib .py sources ─▶ convert (train / held-out split) ─▶ train tiny MegaByte
        ─▶ export ─▶ held-out bits per byte vs. the same bytes' unigram entropy and what gzip,
        bzip2 and xz make of them ─▶ plot ─▶ a sample

Rerunning continues the same run (it resumes from its last checkpoint) and reuses the converted data.
"""

import logging
from pathlib import Path

from pipeline.convert.driver import ConvertOptions, convert
from pipeline.convert.stdlib import stdlib_sources
from pipeline.convert.text import TextConverter

HELD_OUT_EVERY = 50  # every 50th source file (in sorted order) is held out for validation
# measured on 2 idle cores (README, The demo): training steps a minute, and the minutes of the rest
# (conversion, held-out evaluation, compressors, sample)
STEPS_PER_MINUTE = 210
OTHER_MINUTES = 0.3


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="convert the stdlib sources, train the tiny MegaByte "
                                              "for a few minutes, evaluate, plot and generate")
    demo.add_argument("--data", type=Path, default=Path("data"),
                      help="where the converted corpus goes (default: data/)")
    demo.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a key of the tiny-cpu config, e.g. optim.total_steps=200")
    demo.add_argument("--prompt", default="def ", help="text the sample continues (default: 'def ')")
    demo.set_defaults(func=cmd_demo)


def convert_corpus(data: Path) -> tuple[Path, Path]:
    """The stdlib sources as two datasets: train and held-out validation (1 file in 50)."""
    root, files = stdlib_sources()
    logging.getLogger("megabyte.convert").setLevel(logging.ERROR)  # 28 empty __init__.py files
    outputs = []
    for split, keep in [("train", lambda i: i % HELD_OUT_EVERY != 0), ("val", lambda i: i % HELD_OUT_EVERY == 0)]:
        out = data / f"stdlib-{split}"
        chosen = [f for i, f in enumerate(files) if keep(i)]
        # small shards: the loader shuffles shard order per epoch and sequences within a shard,
        # and the sources are in path order (a folder of codec tables sits in one place)
        options = ConvertOptions(out=out, name=f"stdlib-{split}", shard_bytes=1 << 20, workers=2)
        arguments = {"modality": "text", "sources": [str(root)], "include": "*.py", "split": split,
                     "held_out_every": HELD_OUT_EVERY, "compression": "zstd", "level": 3}
        manifest = convert(TextConverter(), chosen, options, arguments)
        totals = manifest.totals
        print(f"{out}: {totals['samples']} documents, {totals['payload_bytes'] / 1e6:.1f} MB "
              f"in {totals['shards']} shards ({totals['skipped']} empty files skipped)")
        outputs.append(out)
    return outputs[0], outputs[1]


def cmd_demo(args) -> int:
    from model import generate
    from pipeline.format.stats import compressed_bits_per_byte, dataset_chunks, dataset_stats
    from pipeline.load.loader import build_validation_loader
    from train.plots import plot_runs
    from train.config import load_config
    from train.evaluate import evaluate
    from train.export import export, load_any
    from train.main import run

    config = load_config("tiny-cpu", [f"data.datasets=['{args.data / 'stdlib-train'}']",
                                      f"data.validation='{args.data / 'stdlib-val'}'", *args.set])
    minutes = config.optim.total_steps / STEPS_PER_MINUTE + OTHER_MINUTES
    print(f"megabyte demo: about {minutes:.0f} minutes on 2 idle cores (longer on a busy machine)")
    print("1/5 converting the Python standard library's sources")
    train_dir, val_dir = convert_corpus(args.data)
    print(f"2/5 training the tiny MegaByte: {config.optim.total_steps} steps "
          f"(about {config.optim.total_steps / STEPS_PER_MINUTE:.1f} minutes on 2 idle cores)")
    run(config)
    run_dir = Path(config.run.out_dir)
    weights = run_dir / "model.safetensors"
    export(run_dir, weights)

    print("3/5 held-out evaluation (every byte of the validation set)")
    model, _ = load_any(weights)
    import torch

    batches = build_validation_loader(config.data)  # the run's data settings, its validation set
    bpb = evaluate(model, batches, torch.device("cpu"))["bpb"]
    entropy = dataset_stats([val_dir]).entropy_bits
    print(f"    held-out: {bpb:.3f} bits per byte; unigram entropy of the same bytes: {entropy:.3f} "
          f"bits per byte ({bpb / entropy:.0%} of it)")
    compressed = compressed_bits_per_byte(dataset_chunks([val_dir]))
    print(f"    the same bytes, each compressor over all of them: "
          f"{', '.join(f'{name} {v:.3f}' for name, v in compressed.items())} bits per byte\n"
          "    (compressors see the raw bytes only; the model is also scored on each document's end)")

    print(f"4/5 {plot_runs([run_dir], run_dir / 'curves.png')}: loss curves")
    print(f"5/5 a sample from {weights} (prompt {args.prompt!r}):\n")
    [text] = generate(model, [args.prompt.encode()], 400, temperature=0.7, top_p=0.95, seed=0)
    print((args.prompt.encode() + text).decode("utf-8", "replace"))
    return 0
