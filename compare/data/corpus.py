"""One corpus → two datasets: its documents, split disjoint by document, converted.

    pinned archives, unpacked ─▶ the corpus's documents (staged in a scratch folder)
        ─▶ train files, validation files ─▶ pipeline.convert ─▶ OUT/NAME-train, OUT/NAME-val

A corpus (text.py, images.py, audio.py) names the pinned packages it is made from and a function
that makes its documents: (trees: package → unpacked files, staging folder) → (train files,
validation files, the converter, the arguments recorded in each manifest).
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compare.data import archives
from pipeline.convert.driver import ConvertOptions, convert
from pipeline.format.manifest import INDEX_NAME

SHARD_BYTES = 1 << 20  # small shards: the loader shuffles shard order, and sources come sorted


@dataclass(frozen=True)
class Corpus:
    name: str  # the datasets are NAME-train and NAME-val
    packages: tuple[str, ...]  # keys of archives.PINNED
    documents: Callable  # (trees, staging) → (train files, validation files, converter, arguments)


def held_out(files: list[Path], every: int) -> tuple[list[Path], list[Path]]:
    """Sorted files → (train, validation): every `every`-th file, from the first, is validation."""
    return ([f for i, f in enumerate(files) if i % every != 0],
            [f for i, f in enumerate(files) if i % every == 0])


def split_dirs(out: Path, name: str) -> list[Path]:
    return [out / f"{name}-train", out / f"{name}-val"]


def is_built(out: Path, name: str) -> bool:
    return all((folder / INDEX_NAME).exists() for folder in split_dirs(out, name))


def build(corpus: Corpus, out: Path, trees: dict[str, Path]) -> None:
    """Prepare the corpus's documents in a scratch folder and convert both splits."""
    staging = out / "downloads" / f".staging-{corpus.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        train, val, converter, arguments = corpus.documents(trees, staging)
        sources = [f"{archives.PINNED[p].package}={archives.PINNED[p].version}" for p in corpus.packages]
        for folder, files in zip(split_dirs(out, corpus.name), [train, val]):
            options = ConvertOptions(out=folder, name=folder.name, shard_bytes=SHARD_BYTES,
                                     progress=False)
            convert(converter, files, options, {**arguments, "sources": sources,
                                                "split": folder.name.rsplit("-", 1)[1]})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
