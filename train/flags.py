"""The flags of `megabyte train`, `megabyte config` and `python -m train.main` (torch-free, so
that the command line starts fast)."""

import argparse


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `megabyte train` / `python -m train.main` (and of `megabyte config`)."""
    parser.add_argument("--config", required=True,
                        help="a TOML file, or a shipped config name: tiny-cpu, text, imagenet64, audio")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher; not for manual use")
