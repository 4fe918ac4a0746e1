"""Tiny datasets for the loader tests: text through the real converter, image and audio shards
written directly with ShardWriter (their converters are not needed to test the loader)."""

import json
from pathlib import Path

import numpy as np

from pipeline.convert.driver import ConvertOptions, convert
from pipeline.load.loader import LoaderConfig, build_train_loader
from pipeline.format.manifest import Manifest, shard_name
from pipeline.format.shards import ShardWriter, payload_compressor
from pipeline.convert.text import TextConverter
from pipeline.format.vocab import BOUNDARY_ID, PAD_ID


def text_docs(count: int, seed: int = 0, low: int = 5, high: int = 160) -> list[bytes]:
    """Documents with a unique prefix, so that each can be recognised after packing."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghij klmnop\n", dtype=np.uint8)
    return [f"<{i:04d}>".encode() + rng.choice(letters, int(rng.integers(low, high))).tobytes()
            for i in range(count)]


def write_text(directory: Path, docs: list[bytes], shard_bytes: int = 12_000) -> Path:
    """A text dataset made by the real converter from one JSONL file (documents in order)."""
    source = directory.parent / f"{directory.name}.jsonl"
    source.write_text("".join(json.dumps({"text": d.decode()}) + "\n" for d in docs))
    options = ConvertOptions(out=directory, name=directory.name, shard_bytes=shard_bytes, progress=False)
    convert(TextConverter(), [source], options, {"test": directory.name})
    return directory


def write_shards(directory: Path, modality: str, samples: list[tuple[bytes, dict]], per_shard: int,
                 compression: str = "zstd", stored: dict[int, bytes] = {}) -> Path:
    """A dataset of `samples` (payload, meta) written straight with ShardWriter, `per_shard` each.

    stored: member bytes to write instead of the encoded payload, by sample number (corruption).
    """
    directory.mkdir(parents=True)
    manifest = Manifest(directory.name, modality, {"test": directory.name})
    cctx = payload_compressor(3)  # checksummed frames, as the converters write
    for first in range(0, len(samples), per_shard):
        writer = ShardWriter(directory / shard_name(directory.name, len(manifest.shards)))
        for i, (payload, meta) in enumerate(samples[first:first + per_shard], start=first):
            meta = {"modality": modality, "source": f"synthetic/{i}", "length": len(payload), **meta}
            encoded = cctx.compress(payload) if compression == "zstd" else payload
            encoded = stored.get(i, encoded)
            writer.add(f"s{i:06d}", compression, encoded, len(payload), meta)
        manifest.shards.append(writer.close())
    manifest.save(directory)
    return directory


def images(count: int, size: int, seed: int = 1) -> list[tuple[bytes, dict]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, size * size * 3, dtype=np.uint8).tobytes(),
             {"height": size, "width": size, "channels": 3, "label": i % 10}) for i in range(count)]


def clips(count: int, seed: int = 2, low: int = 20, high: int = 200, encoding: str = "pcm16"):
    """Audio clips of random lengths (in audio samples), as raw little-endian PCM bytes."""
    rng = np.random.default_rng(seed)
    width = 2 if encoding == "pcm16" else 1
    return [(rng.integers(0, 256, int(rng.integers(low, high)) * width, dtype=np.uint8).tobytes(),
             {"encoding": encoding, "sample_rate": 16000}) for _ in range(count)]


def real_ids(row) -> list[int]:
    """A batch row without its PAD ids."""
    return [x for x in row.tolist() if x != PAD_ID]


def split_documents(ids: list[int]) -> list[bytes]:
    """Concatenated ids → documents, cut at each BOUNDARY (the trailing empty piece dropped)."""
    docs, current = [], []
    for x in ids:
        if x == BOUNDARY_ID:
            docs.append(bytes(current))
            current = []
        else:
            current.append(x)
    assert not current, "ids after the last boundary"
    return docs


def take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def global_stream(cfg: LoaderConfig, world_size: int, batches: int) -> list[dict]:
    """The first `batches` batches of every rank, merged into the global order: for each row,
    {"identity": (dataset, sequence), "epoch", "modality", "ids": its ids without PAD}."""
    per_rank = [take(iter(build_train_loader(cfg, rank, world_size)), batches)
                for rank in range(world_size)]
    rows = []
    for b in range(batches):
        for rank in range(world_size):
            batch = per_rank[rank][b]
            for i, row in enumerate(batch["ids"]):
                rows.append({"identity": (batch["dataset"][i], batch["sequence"][i]),
                             "epoch": batch["epoch"][i], "modality": batch["modality"][i],
                             "ids": real_ids(row)})
    return rows
