"""Bad data: a flipped byte, sha256 mismatch, truncated tar, corrupt zstd member, lying metadata;
raise or skip (in training, a skipped sample becomes PAD ids of its length)."""

import logging

import pytest
import zstandard

from loader_datasets import split_documents, take, text_docs, write_shards
from pipeline.format.errors import DataError, UsageError
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from pipeline.format.files import file_sha256
from pipeline.format.manifest import load_manifest
from pipeline.format.vocab import PAD_ID


DOCS = text_docs(24, seed=5, low=100, high=400)
PER_SHARD = 6  # 4 shards: s000000-5, s000006-11, s000012-17, s000018-23


def text_dataset(directory, stored=None):
    return write_shards(directory, "text", [(d, {}) for d in DOCS], PER_SHARD, stored=stored or {})


def config(directory, **changes) -> LoaderConfig:
    return LoaderConfig([str(directory)], **{"seq_len": 64, "patch_size": 8, "micro_batch_size": 2,
                                             "num_workers": 0, "shuffle_sequences": 1,
                                             **changes})


def epoch_documents(directory, **changes) -> list[bytes]:
    """The documents of the first epoch that were not skipped."""
    loader = build_train_loader(config(directory, **changes))
    total = loader.order.datasets[0].epoch_units  # ids in an epoch
    batches = take(iter(loader), -(-total // 128))
    ids = [x for batch in batches for row in batch["ids"].tolist() for x in row][:total]
    return sorted(split_documents([x for x in ids if x != PAD_ID]))


def shard_path(directory, number: int):
    return directory / load_manifest(directory).shards[number].name


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[540] ^= 0xFF  # inside the first payload; the size stays, the sha256 changes
    path.write_bytes(bytes(data))


def rewrite_manifest(directory, number: int) -> None:
    """Make the manifest agree with a shard changed on disk (size and sha256)."""
    manifest = load_manifest(directory)
    info = manifest.shards[number]
    info.file_bytes = shard_path(directory, number).stat().st_size
    info.sha256 = file_sha256(shard_path(directory, number))
    manifest.save(directory)


def first_batches(directory, **changes):
    """More than an epoch's worth of batches."""
    return take(iter(build_train_loader(config(directory, **changes))), 120)


def test_a_flipped_byte_raises_naming_the_sample_or_skips_it(tmp_path, caplog):
    directory = text_dataset(tmp_path / "data")
    path = shard_path(directory, 2)
    flip_a_byte(path)  # the shard's sha256 changes; a rank that reads only some samples sees it
    with pytest.raises(DataError, match=rf"{path.name}: s000012: corrupt zstd member"):  # checksum
        first_batches(directory)
    with pytest.raises(DataError, match=rf"{path.name}: s000012"):  # from a DataLoader worker too
        first_batches(directory, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="megabyte.loader"):
        documents = epoch_documents(directory, on_error="skip")
    assert documents == sorted(DOCS[:12] + DOCS[13:])
    assert any(path.name in record.getMessage() for record in caplog.records)


def test_sha256_of_shards_without_a_member_index_is_checked(tmp_path):
    directory = text_dataset(tmp_path / "data")
    manifest = load_manifest(directory)
    for info in manifest.shards:
        info.index_sha256 = None  # as written before format v3
    manifest.save(directory)
    path = shard_path(directory, 2)
    flip_a_byte(path)
    with pytest.raises(DataError, match=rf"{path.name}: sha256 .* does not match the manifest"):
        first_batches(directory)
    assert epoch_documents(directory, on_error="skip") == sorted(DOCS[:12] + DOCS[18:])


def test_truncated_tar_is_caught_by_size_or_by_the_sample_read(tmp_path):
    directory = text_dataset(tmp_path / "data")
    path = shard_path(directory, 1)
    path.write_bytes(path.read_bytes()[:5000])  # inside sample s000008's members
    with pytest.raises(DataError, match=rf"{path.name}: file is 5000 bytes, the manifest says"):
        first_batches(directory)
    assert epoch_documents(directory, on_error="skip") == sorted(DOCS[:6] + DOCS[12:])
    rewrite_manifest(directory, 1)  # the manifest agrees, and so claims 6 samples in 5000 bytes
    for on_error in ("raise", "skip"):
        with pytest.raises(UsageError, match=rf"{path.name}: 6 samples cannot fit in 5000 bytes"):
            first_batches(directory, on_error=on_error)


def test_corrupt_zstd_member_raises_with_its_key_or_skips_that_sample(tmp_path):
    garbage = b"\x28\xb5\x2f\xfd" + bytes(range(60))  # a zstd magic number, then nonsense
    directory = text_dataset(tmp_path / "data", stored={9: garbage})
    with pytest.raises(DataError, match=r"-000001\.tar: s000009: corrupt zstd member"):
        first_batches(directory)
    loader = build_train_loader(config(directory, on_error="skip"))
    take(iter(loader), 60)
    assert loader.skipped() >= 1
    assert epoch_documents(directory, on_error="skip") == sorted(DOCS[:9] + DOCS[10:])


def test_decompression_is_bounded_by_the_metadata_and_the_manifest(tmp_path):
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 1_000_000)  # declares its size
    stream = zstandard.ZstdCompressor().compressobj()
    hidden = stream.compress(b"\0" * 1_000_000) + stream.flush()  # does not declare it
    samples = [(d, {}) for d in DOCS[:4]] + [(b"x" * 50, {}), (b"y" * 50, {}), (b"z", {"length": 10**12})]
    for name, stored in [("bomb", bomb), ("hidden", hidden)]:
        directory = write_shards(tmp_path / name, "text", samples[:5], per_shard=7, stored={4: stored})
        with pytest.raises(DataError, match="s000004: decompresses to more than 50 bytes"):
            first_batches(directory)
    directory = write_shards(tmp_path / "data", "text", samples, per_shard=7, stored={4: bomb, 5: hidden})
    assert epoch_documents(directory, on_error="skip") == sorted(DOCS[:4])
    directory = write_shards(tmp_path / "lying", "text", samples[6:] + samples[:4], per_shard=7)
    with pytest.raises(DataError, match="metadata length 1000000000000 is outside"):
        first_batches(directory)


def test_a_dataset_with_nothing_usable_stops_instead_of_spinning(tmp_path):
    directory = text_dataset(tmp_path / "data", stored={i: b"junk" for i in range(len(DOCS))})
    with pytest.raises(DataError, match="nothing left to train on"):
        first_batches(directory, on_error="skip")


def test_validation_skip_keeps_every_ranks_share(tmp_path):
    directory = text_dataset(tmp_path / "data", stored={3: b"junk"})
    flip_a_byte(shard_path(directory, 2))
    with pytest.raises(DataError, match="s000003: corrupt zstd member"):
        list(build_validation_loader(config(directory, validation=directory)))
    rows, lengths = [], set()
    for rank in range(3):
        batches = list(build_validation_loader(config(directory, validation=directory, on_error="skip"), rank, 3))
        lengths.add(len(batches))
        rows += [row.tolist() for batch in batches for row in batch["ids"]]
    assert len(lengths) == 1
    ids = [x for row in rows for x in row]
    kept = DOCS[:12] + DOCS[18:]  # shard 2 left out on every rank alike
    assert split_documents([x for x in ids if x != PAD_ID]) == [d for d in kept if d != DOCS[3]]
    assert ids.count(PAD_ID) >= len(DOCS[3]) + 1  # the bad sample's place, in PAD
