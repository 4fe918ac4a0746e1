"""Real public corpora for `megabyte compare`, pinned by package, exact version and sha256.

    pinned archives ─▶ download (apt-get download / pip download) ─▶ sha256 check ─▶ unpack
        ─▶ documents: KJV chapters · Django .py files · photo tiles · recorded sounds
        ─▶ split, disjoint by document ─▶ pipeline.convert ─▶ OUT/NAME-train, OUT/NAME-val

    python -m compare.data --out data/real [--only kjv|django|photos32|photos64|photos640|sounds8k|sounds16k]

Every archive is checked before anything is converted (archives.py). Archives are cached
(verified) and unpacked under OUT/downloads; a dataset whose index.json exists is not built again.
OUT/SOURCES.md lists what each dataset was made from.
"""

import argparse
import logging
import sys
from pathlib import Path

from compare.data import archives
from compare.data.audio import SOUNDS8K, SOUNDS16K
from compare.data.corpus import build, is_built, split_dirs
from compare.data.images import PHOTOS32, PHOTOS64, PHOTOS640
from compare.data.text import DJANGO, KJV
from pipeline.format.errors import DataError, UsageError
from pipeline.format.files import write_text_atomically
from pipeline.format.manifest import load_manifest

CORPORA = {corpus.name: corpus for corpus in [KJV, DJANGO, PHOTOS32, PHOTOS64, PHOTOS640, SOUNDS8K,
                                                           SOUNDS16K]}


def write_sources(out: Path, downloads: Path) -> Path:
    """OUT/SOURCES.md: each dataset's pinned archives, their hashes and licence lines."""
    lines = ["# Sources of the real corpora", "",
             "| dataset | package | version | file | sha256 | licence |", "|---|---|---|---|---|---|"]
    for name, corpus in CORPORA.items():
        for package in corpus.packages:
            source = archives.PINNED[package]
            tree = downloads / f"{source.package}_{source.version}"
            found = archives.licence(source, tree) if tree.exists() else "(not downloaded)"
            lines.append(f"| {name} | {source.package} | {source.version} | {source.file} | "
                         f"{source.sha256} | {found.replace('|', '/')} |")
    path = out / "SOURCES.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


def summary(folder: Path) -> str:
    totals = load_manifest(folder).totals
    return (f"{folder}: {totals['samples']} documents, {totals['payload_bytes']:,} bytes, "
            f"{totals['shards']} shards")


def make_real_data(out: Path, names: list[str]) -> None:
    downloads = out / "downloads"
    todo = [CORPORA[name] for name in names if not is_built(out, name)]
    packages = sorted({p for corpus in todo for p in corpus.packages})
    fetched = {p: archives.fetch(archives.PINNED[p], downloads) for p in packages}  # every hash checked first
    trees = {p: archives.unpack(archives.PINNED[p], fetched[p], downloads) for p in packages}
    for corpus in todo:
        print(f"building {corpus.name}", flush=True)
        build(corpus, out, {p: trees[p] for p in corpus.packages})
    write_sources(out, downloads)
    for name in names:
        for folder in split_dirs(out, name):
            print(summary(folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compare.data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="where the datasets (NAME-train, NAME-val), downloads/ and SOURCES.md go")
    parser.add_argument("--only", choices=sorted(CORPORA), default=None,
                        help="build this dataset alone (default: all of them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        make_real_data(args.out, [args.only] if args.only else list(CORPORA))
    except (UsageError, DataError) as error:
        print(f"compare.data: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0
