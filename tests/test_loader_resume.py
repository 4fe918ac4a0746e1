"""Exact resume: a restored loader yields exactly what the uninterrupted one would have next."""

import json

import pytest
import torch

import pipeline.load.reading
from loader_datasets import clips, images, take, text_docs, write_shards, write_text
from pipeline.load.loader import LoaderConfig, build_train_loader, worker_states
from pipeline.format.shards import load_manifest



@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Text, image and audio datasets, several small shards each, so that cut points fall inside
    blocks, across pieces and across epochs."""
    root = tmp_path_factory.mktemp("mixed")
    text = write_text(root / "text", text_docs(40), shard_bytes=12_000)
    image = write_shards(root / "image", "image", images(20, size=4), per_shard=6)
    audio = write_shards(root / "audio", "audio", clips(20), per_shard=5)
    return [str(text), str(image), str(audio)]


def config(datasets, **changes) -> LoaderConfig:
    settings = dict(weights=[0.5, 0.3, 0.2], seq_len=96, patch_size=12, micro_batch_size=3, num_workers=0,
                    shuffle_buffer=5, image_order="patch", seed=7)
    return LoaderConfig(datasets, **{**settings, **changes})


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want)):
        assert a["ids"].dtype == torch.int64 and a["ids"].shape == (3, 96)
        assert torch.equal(a["ids"], b["ids"]), f"batch {step} differs"
        assert (a["modality"], a["dataset"], a["epoch"]) == (b["modality"], b["dataset"], b["epoch"])


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
    cfg = config(mixed, text_packing="document", shuffle_buffer=3)
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


def test_resume_with_sparse_snapshots_and_odd_fetches_replays_to_the_exact_batch(mixed):
    cfg = config(mixed, num_workers=2, snapshot_every_n_steps=4, batches_per_fetch=3)
    reference = take(iter(build_train_loader(cfg)), 20)
    for cut in (3, 7, 10, 17):
        assert_same_batches(resumed(cfg, 0, 1, cut, 20), reference)


def test_iterating_again_goes_on_where_it_stopped(mixed):
    for workers in (0, 2):
        cfg = config(mixed, num_workers=workers)
        reference = take(iter(build_train_loader(cfg)), 8)
        loader = build_train_loader(cfg)
        got = take(iter(loader), 3)
        got += take(iter(loader), 5)
        assert_same_batches(got, reference)


def test_resume_rereads_at_most_the_current_shard(mixed, monkeypatch):
    """A restore decodes the current block again (at most one shard per dataset), never the epoch."""
    decoded = []
    decode = pipeline.load.reading.decode_payload
    monkeypatch.setattr(pipeline.load.reading, "decode_payload", lambda *a: decoded.append(1) or decode(*a))
    cfg = config(mixed, shuffle_buffer=64)
    cut = 24
    uninterrupted = build_train_loader(cfg)
    iterator = iter(uninterrupted)
    take(iterator, cut)
    state = uninterrupted.state_dict()
    decoded.clear()
    take(iterator, 1)
    needed = len(decoded)
    restored = build_train_loader(cfg)
    restored.load_state_dict(state)
    decoded.clear()
    take(iter(restored), 1)
    largest_shards = sum(max(s.samples for s in load_manifest(d).shards) for d in mixed)
    assert len(decoded) <= needed + largest_shards
    epoch_samples = sum(load_manifest(d).totals["samples"] for d in mixed)
    assert len(decoded) < epoch_samples // 2


def test_same_seed_same_order(mixed):
    def first_batches(**changes):
        return torch.cat([b["ids"] for b in take(iter(build_train_loader(config(mixed, **changes), 1, 2)), 6)])
    assert torch.equal(first_batches(), first_batches())
    assert not torch.equal(first_batches(), first_batches(seed=8))
    assert torch.equal(first_batches(num_workers=0), first_batches(num_workers=1))
    # fetch size is only how batches travel: batch k still comes from worker k % workers
    fetched = [first_batches(num_workers=2, batches_per_fetch=n) for n in (1, 3, 8)]
    assert torch.equal(fetched[0], fetched[1]) and torch.equal(fetched[0], fetched[2])


def test_state_refuses_another_world_size_worker_count_rank_or_order(mixed):
    state = build_train_loader(config(mixed), 0, 2).state_dict()
    assert json.loads(json.dumps(state)) == state
    assert [s["stream"] for s in worker_states(state["dataloader"])] == [0]
    for rank, world_size, changes, message in [
        (0, 4, {}, "world_size"), (1, 2, {}, "rank 0 of world_size 2"),
        (0, 2, {"num_workers": 2}, "num_workers"), (0, 2, {"seed": 1}, "seed"),
        (0, 2, {"weights": [1, 1, 1]}, "weights"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_train_loader(config(mixed, **changes), rank, world_size).load_state_dict(state)
    with pytest.raises(ValueError, match="not a loader state"):
        build_train_loader(config(mixed), 0, 2).load_state_dict({**state, "version": 99})
