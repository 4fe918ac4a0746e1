"""Exact, elastic resume: a restored loader yields exactly what the uninterrupted one would have
next, also at another world size, worker count or batch size; and each rank reads only its own
samples."""

import json

import pytest
import torch

import pipeline.load.reading
from loader_datasets import clips, global_stream, images, take, text_docs, write_shards, write_text
from pipeline.load.loader import LoaderConfig, build_train_loader



@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Text, image and audio datasets, several small shards each, so that cut points fall inside
    documents, across pieces and across epochs."""
    root = tmp_path_factory.mktemp("mixed")
    text = write_text(root / "text", text_docs(40), shard_bytes=12_000)
    image = write_shards(root / "image", "image", images(20, size=4), per_shard=6)
    audio = write_shards(root / "audio", "audio", clips(20), per_shard=5)
    return [str(text), str(image), str(audio)]


def config(datasets, **changes) -> LoaderConfig:
    settings = dict(weights=[0.5, 0.3, 0.2], seq_len=96, patch_size=12, micro_batch_size=3, num_workers=0,
                    piece_sequences=1, image_order="patch", seed=7)
    return LoaderConfig(datasets, **{**settings, **changes})


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want)):
        assert a["ids"].dtype == torch.int64 and a["ids"].shape == (3, 96)
        assert torch.equal(a["ids"], b["ids"]), f"batch {step} differs"
        assert (a["modality"], a["dataset"], a["sequence"], a["epoch"]) == \
            (b["modality"], b["dataset"], b["sequence"], b["epoch"])


def resumed(cfg, rank, world_size, cut, total, roundtrip=True) -> list[dict]:
    """`cut` batches, state saved (through JSON), a new loader restored, the rest of `total`."""
    first = build_train_loader(cfg, rank, world_size)
    before = take(iter(first), cut)
    state = first.state_dict()
    if roundtrip:
        state = json.loads(json.dumps(state))
    del first
    second = build_train_loader(cfg, rank, world_size)
    second.load_state_dict(state)
    return before + take(iter(second), total - cut)


@pytest.mark.parametrize("num_workers, world_size, rank, total, cuts", [
    (0, 1, 0, 40, range(0, 41, 3)),
    (0, 2, 1, 30, range(1, 30, 4)),
    (2, 1, 0, 26, (1, 2, 7, 16, 25)),
    (2, 2, 0, 14, (1, 4, 9, 13)),
    (2, 2, 1, 14, (3, 8)),
])
def test_resume_continues_with_exactly_the_next_batch(mixed, num_workers, world_size, rank, total, cuts):
    cfg = config(mixed, num_workers=num_workers)
    reference = take(iter(build_train_loader(cfg, rank, world_size)), total)
    assert max(max(b["epoch"]) for b in reference) >= 1, "the cut points should cross an epoch"
    assert {m for b in reference for m in b["modality"]} == {"text", "image", "audio"}
    for cut in cuts:
        assert_same_batches(resumed(cfg, rank, world_size, cut, total), reference)


def test_resume_of_a_resumed_loader_and_document_packing(mixed):
    cfg = config(mixed, text_packing="document")
    reference = take(iter(build_train_loader(cfg)), 30)
    loader = build_train_loader(cfg)
    got = take(iter(loader), 4)
    for cut in (9, 17, 26):
        state = json.loads(json.dumps(loader.state_dict()))
        loader = build_train_loader(cfg)
        loader.load_state_dict(state)
        got += take(iter(loader), cut - len(got))
    got += take(iter(loader), 30 - len(got))
    assert_same_batches(got, reference)


@pytest.mark.parametrize("before, after", [
    ((2, 2, 3), (1, 0, 6)),  # (world_size, num_workers, micro_batch_size)
    ((1, 0, 6), (3, 1, 2)),
    ((3, 1, 2), (2, 2, 1)),
])
def test_elastic_resume_continues_the_global_stream(mixed, before, after):
    """Stopped on N ranks with W workers, resumed on M ranks with V workers and another
    micro-batch: the same global stream goes on, no sequence repeated or skipped."""
    def cfg(shape):
        return config(mixed, num_workers=shape[1], micro_batch_size=shape[2], batches_per_fetch=2)
    reference = global_stream(cfg((1, 0, 6)), 1, 8)  # 48 sequences
    world, _, micro = before
    steps = 24 // (world * micro)  # stop after 24 sequences, at a step boundary
    loaders = [build_train_loader(cfg(before), rank, world) for rank in range(world)]
    for loader in loaders:
        take(iter(loader), steps)
    states = [json.loads(json.dumps(loader.state_dict())) for loader in loaders]
    assert all(state == states[0] for state in states), "every rank saves the same state"
    world, _, micro = after
    resumed_rows = []
    per_rank = []
    for rank in range(world):
        loader = build_train_loader(cfg(after), rank, world)
        loader.load_state_dict(states[rank % len(states)])
        per_rank.append(take(iter(loader), 24 // (world * micro)))
    for b in range(24 // (world * micro)):
        for rank in range(world):
            batch = per_rank[rank][b]
            resumed_rows += [((d, k), [x for x in row.tolist() if x != 256])
                             for d, k, row in zip(batch["dataset"], batch["sequence"], batch["ids"])]
    assert resumed_rows == [(row["identity"], row["ids"]) for row in reference[24:]]


def test_iterating_again_goes_on_where_it_stopped(mixed):
    for workers in (0, 2):
        cfg = config(mixed, num_workers=workers)
        reference = take(iter(build_train_loader(cfg)), 8)
        loader = build_train_loader(cfg)
        got = take(iter(loader), 3)
        got += take(iter(loader), 5)
        assert_same_batches(got, reference)


def test_each_rank_reads_only_its_own_samples(mixed, monkeypatch):
    """Sample reads seek to the samples of the rank's own sequences: no shard is scanned."""
    read = []
    read_at = pipeline.load.reading.read_members_at
    monkeypatch.setattr(pipeline.load.reading, "read_members_at",
                        lambda file, offset, size: read.append((file.name, offset)) or read_at(file, offset, size))
    cfg = config(mixed[:1], weights=[], micro_batch_size=2)
    for rank in (0, 1):
        read.clear()
        loader = build_train_loader(cfg, rank, 2)
        batches = take(iter(loader), 5)
        order = loader.order.datasets[0]
        mine = {(loader.sources[0].shards[int(order.table.shard[s.sample])].path, int(order.table.offset[s.sample]))
                for batch in batches for k in batch["sequence"] for s in order.output(k)[0]}
        assert set(read) == mine and len(read) == len(mine), "each sample read once, and only those"


def test_same_seed_same_order(mixed):
    def first_batches(**changes):
        return torch.cat([b["ids"] for b in take(iter(build_train_loader(config(mixed, **changes), 1, 2)), 6)])
    assert torch.equal(first_batches(), first_batches())
    assert not torch.equal(first_batches(), first_batches(seed=8))
    assert torch.equal(first_batches(num_workers=0), first_batches(num_workers=1))
    fetched = [first_batches(num_workers=2, batches_per_fetch=n) for n in (1, 3, 8)]
    assert torch.equal(fetched[0], fetched[1]) and torch.equal(fetched[0], fetched[2])


def test_state_refuses_another_order_naming_the_setting(mixed):
    state = build_train_loader(config(mixed), 0, 2).state_dict()
    assert json.loads(json.dumps(state)) == state
    build_train_loader(config(mixed, num_workers=2), 1, 3).load_state_dict(state)  # allowed
    for changes, message in [({"seed": 1}, "seed"), ({"weights": [1, 1, 1]}, "weights"),
                             ({"seq_len": 48}, "seq_len"), ({"piece_sequences": 2}, "piece_sequences")]:
        with pytest.raises(ValueError, match=f"saved with other {message}"):
            build_train_loader(config(mixed, **changes), 0, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with other datasets"):
        build_train_loader(config(mixed[:2], weights=[1, 1]), 0, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="not a loader state"):
        build_train_loader(config(mixed), 0, 2).load_state_dict({**state, "version": 1})
