"""What the ranks and workers see together: one global stream of sequences whatever the cluster
shape, each epoch every sample once in a new order, the mixing proportions, and a validation pass
that covers every byte exactly once."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from loader_datasets import (clips, global_stream, images, real_ids, split_documents, text_docs,
                             write_shards, write_text)
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from pipeline.format.scan import from_patch_order
from pipeline.format.manifest import load_manifest


# three workers on a two-core test machine are deliberate here
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

DOCS = text_docs(40, seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    return {
        "text": write_text(root / "text", DOCS, shard_bytes=12_000),  # 7 shards
        "text3": write_text(root / "text3", DOCS, shard_bytes=30_000),  # 3 shards: fewer than streams
        "image": write_shards(root / "image", "image", images(14, size=4), per_shard=4),
        "audio": write_shards(root / "audio", "audio", clips(12), per_shard=5),
    }


@pytest.mark.parametrize("world_size, num_workers, micro", [(1, 0, 4), (2, 0, 2), (2, 2, 1), (1, 3, 4)])
def test_one_global_stream_whatever_the_ranks_workers_and_batch_size(data, world_size, num_workers, micro):
    cfg = LoaderConfig([data["text"]], seq_len=64, patch_size=8, micro_batch_size=micro,
                       num_workers=num_workers, batches_per_fetch=2, seed=11)
    rows = global_stream(cfg, world_size, 48 // (world_size * micro))
    assert [row["identity"] for row in rows] == [(0, k) for k in range(48)]
    reference = global_stream(replace(cfg, micro_batch_size=4, num_workers=0), 1, 12)
    assert [row["ids"] for row in rows] == [row["ids"] for row in reference]


@pytest.mark.parametrize("dataset", ["text", "text3"])
def test_each_epoch_is_every_document_once_in_a_new_order(data, dataset):
    cfg = LoaderConfig([data[dataset]], seq_len=64, patch_size=8, micro_batch_size=8, num_workers=0,
                       piece_sequences=1000, shuffle_sequences=1, seed=11)  # whole documents, in order
    ids = [x for row in global_stream(cfg, 1, 20) for x in row["ids"]]  # 160 rows of 64 ids
    total = sum(len(d) + 1 for d in DOCS)  # the epochs follow each other without a seam
    epochs = [split_documents(ids[e * total:(e + 1) * total]) for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(DOCS)
    assert epochs[0] != DOCS and epochs[0] != epochs[1], "shuffled anew each epoch"


def test_a_few_shards_are_mixed_as_well_as_many(tmp_path):
    """Seven 'books' in one shard: the first sequences already come from all of them."""
    books = [bytes([65 + b]) * 5000 for b in range(7)]
    directory = write_shards(tmp_path / "books", "text", [(book, {}) for book in books], per_shard=7)
    cfg = LoaderConfig([str(directory)], seq_len=64, patch_size=8, micro_batch_size=4, num_workers=0,
                       piece_sequences=2, seed=0)
    rows = global_stream(cfg, 1, 10)  # 40 sequences of 64 = 2560 of 35007 ids
    letters = {x for row in rows for x in row["ids"] if x < 256}
    assert letters == set(range(65, 72))


def test_sequences_are_permuted_in_blocks_so_that_a_batch_mixes_documents(tmp_path):
    books = [bytes([65 + b]) * 5000 for b in range(7)]  # one piece is 8 sequences of one book
    directory = write_shards(tmp_path / "books", "text", [(book, {}) for book in books], per_shard=7)
    def first_rows(shuffle_sequences):
        cfg = LoaderConfig([str(directory)], seq_len=64, patch_size=8, micro_batch_size=8, num_workers=0,
                           shuffle_sequences=shuffle_sequences, seed=0)
        return global_stream(cfg, 1, 16)
    plain, shuffled = first_rows(1), first_rows(64)
    for block in (0, 64):  # the same sequences in each block of 64, in another order
        assert sorted(r["ids"] for r in shuffled[block:block + 64]) == sorted(r["ids"] for r in plain[block:block + 64])
    assert [r["ids"] for r in shuffled] != [r["ids"] for r in plain]
    def books_in_first_batch(rows):
        return len({x for row in rows[:8] for x in row["ids"] if x < 256})
    assert books_in_first_batch(plain) <= 2 and books_in_first_batch(shuffled) >= 3


def test_long_documents_are_cut_into_pieces_that_still_cover_the_epoch(data):
    cfg = LoaderConfig([data["text"]], seq_len=64, patch_size=8, micro_batch_size=8, num_workers=0,
                       piece_sequences=1, shuffle_sequences=1, seed=2)
    total = sum(len(d) + 1 for d in DOCS)
    rows = global_stream(cfg, 1, -(-total // (64 * 8)) + 1)
    ids = [x for row in rows for x in row["ids"]][:total]
    assert Counter(ids) == Counter(x for d in DOCS for x in list(d) + [257])


def test_document_packing_gives_one_document_per_sequence(data):
    cfg = LoaderConfig([data["text"]], seq_len=64, patch_size=8, micro_batch_size=2, num_workers=0,
                       text_packing="document", piece_sequences=1000, shuffle_sequences=1)
    rows = [row for row in global_stream(cfg, 2, 40) if row["epoch"] == 0]
    assert all(257 not in row["ids"][:-1] for row in rows)  # a boundary only ever ends a sequence
    prefix = Counter(bytes(row["ids"][:6]) for row in rows if row["ids"][0] == ord("<"))
    assert sorted(prefix) == sorted(d[:6] for d in DOCS) and set(prefix.values()) == {1}


def test_images_once_per_epoch_one_per_sequence(data):
    cfg = LoaderConfig([data["image"]], seq_len=96, patch_size=12, micro_batch_size=7, num_workers=2,
                       image_order="patch", shuffle_sequences=7)  # blocks within the epoch of 14
    rows = global_stream(cfg, 2, 1)  # 14 images
    pictures = sorted(from_patch_order(np.array(r["ids"], np.uint8), 4, 12).tobytes() for r in rows)
    assert pictures == sorted(payload for payload, _ in images(14, size=4))
    assert {r["epoch"] for r in rows} == {0}


def test_audio_windows_once_per_epoch_aligned_to_frames(data):
    want = [pcm[i:i + 40] for pcm, _ in clips(12) for i in range(0, len(pcm), 40)]
    cfg = LoaderConfig([data["audio"]], seq_len=40, patch_size=4, micro_batch_size=len(want), num_workers=0,
                       shuffle_sequences=1)
    rows = global_stream(cfg, 1, 2)
    assert sorted(bytes(r["ids"]) for r in rows if r["epoch"] == 0) == sorted(want)
    assert sorted(bytes(r["ids"]) for r in rows if r["epoch"] == 1) == sorted(want)


def test_mixing_follows_the_weights_and_the_seed(data):
    def modalities(seed):
        cfg = LoaderConfig([data["text"], data["image"], data["audio"]], weights=[7, 2, 1],
                           seq_len=96, patch_size=12, micro_batch_size=50, num_workers=0, seed=seed)
        iterator = iter(build_train_loader(cfg))
        batches = [next(iterator) for _ in range(60)]
        for batch in batches:  # each row says what it is
            for row, modality in zip(batch["ids"], batch["modality"]):
                ids = real_ids(row)
                assert modality == "text" or 257 not in ids
                assert modality != "image" or len(ids) == 48
                assert modality != "audio" or len(ids) % 2 == 0
        return sum((b["modality"] for b in batches), [])
    drawn = modalities(seed=0)
    shares = Counter(drawn)
    for modality, weight in {"text": 0.7, "image": 0.2, "audio": 0.1}.items():
        assert abs(shares[modality] / len(drawn) - weight) < 0.03
    assert modalities(seed=0) == drawn and modalities(seed=1) != drawn


def validation_rows(directory, world_size, num_workers, seq_len=64, patch_size=8, **options):
    """All ranks' rows (PAD dropped, all-PAD rows left out), rank after rank."""
    rows, lengths = [], set()
    for rank in range(world_size):
        config = LoaderConfig(validation=directory, seq_len=seq_len, patch_size=patch_size,
                              micro_batch_size=2, num_workers=num_workers, **options)
        loader = build_validation_loader(config, rank, world_size)
        batches = list(loader)
        lengths.add(len(batches))
        assert len(batches) == len(loader)
        assert all(b["ids"].shape == (2, seq_len) for b in batches)
        rows += [real_ids(row) for b in batches for row in b["ids"]]
    assert len(lengths) == 1, "every rank must get the same number of batches"
    return [row for row in rows if row]


def same_rows(got, want) -> bool:
    """The same sequences (workers of a rank take turns, so their parts interleave)."""
    return sorted(map(tuple, got)) == sorted(map(tuple, want))


def test_validation_covers_every_byte_once(data):
    text = validation_rows(data["text"], 1, 0)
    assert split_documents(sum(text, [])) == DOCS  # in manifest order, each byte once
    audio = validation_rows(data["audio"], 1, 0)
    windows = [pcm[i:i + 64] for pcm, _ in clips(12) for i in range(0, len(pcm), 64)]
    assert [bytes(w) for w in audio] == windows
    for world_size, num_workers in [(2, 0), (3, 2), (5, 0), (2, 3)]:
        assert validation_rows(data["text"], world_size, 0) == text  # ranks in order, no overlap
        assert same_rows(validation_rows(data["text"], world_size, num_workers), text)
        assert same_rows(validation_rows(data["audio"], world_size, num_workers), audio)


def test_validation_of_images_and_of_document_text(data):
    rows = validation_rows(data["image"], 3, 0, seq_len=96, patch_size=12)
    assert [bytes(r) for r in rows] == [payload for payload, _ in images(14, size=4)]
    rows = validation_rows(data["text3"], 1, 0, text_packing="document")
    assert split_documents(sum(rows, [])) == DOCS
    assert same_rows(validation_rows(data["text3"], 2, 2, text_packing="document"), rows)
    assert [load_manifest(data[d]).totals["shards"] for d in ("text", "text3")] == [7, 3]
