"""train.checkpoint: named parts saved and restored by protocol, as plain JSON and safetensors."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.format.errors import UsageError
from train import checkpoint
from train.state import RNGState, RunState


class Files:
    """A part that writes its own files (as DeepSpeed's engine does)."""

    def __init__(self, text: str = ""):
        self.text = text

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "files.txt").write_text(self.text)

    def load(self, folder: Path) -> None:
        self.text = (folder / "files.txt").read_text()


class Refusing:
    def state_dict(self) -> dict:
        return {"order": 1}

    def load_state_dict(self, state: dict) -> None:
        raise ValueError("saved with another seed")


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_tensors_are_split_from_plain_data_and_joined_back():
    state = {"a": torch.arange(4), "b": [1, (torch.ones(2, 2), "x")], "c": {"d": None, "e": 2.5}}
    tensors = {}
    plain = checkpoint.split_tensors(state, "", tensors)
    assert json.loads(json.dumps(plain)) == plain and sorted(tensors) == ["/a", "/b/1/0"]
    joined = checkpoint.join_tensors(plain, tensors)
    assert torch.equal(joined["a"], state["a"]) and torch.equal(joined["b"][1][0], torch.ones(2, 2))
    assert joined["b"][0] == 1 and joined["b"][1][1] == "x" and joined["c"] == state["c"]


def test_save_and_load_every_part(tmp_path, world_of_one):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    random.gauss(0, 1)  # leaves a cached second normal in Python's state
    parts = {"files": Files("engine"), "run": RunState(step=7, bytes_seen=1000), "rng": RNGState()}
    folder = checkpoint.save(tmp_path / "ckpt", 7, parts, {"model": {"seq_len": 64}}, keep_last=2)
    expected = draws()

    assert folder.name == "step-000007" and (folder / checkpoint.MARKER).is_file()
    assert checkpoint.latest(tmp_path / "ckpt") == folder
    assert checkpoint.read_config(folder) == {"model": {"seq_len": 64}}
    record = json.loads((folder / "state" / "rank-00000.json").read_text())  # plain JSON
    assert record["world_size"] == 1 and record["parts"]["run"] == {"step": 7, "bytes_seen": 1000}

    draws()  # move every generator on
    restored = {"files": Files(), "run": RunState(), "rng": RNGState()}
    checkpoint.load(folder, restored, rank=0)
    assert restored["files"].text == "engine"
    assert restored["run"] == RunState(step=7, bytes_seen=1000)
    assert draws() == expected  # the generators continue exactly where they were saved

    conversion = tmp_path / "ckpt" / checkpoint.UNIVERSAL / folder.name  # as train.reshard makes them
    conversion.mkdir(parents=True)
    for step in (8, 9):
        checkpoint.save(tmp_path / "ckpt", step, parts, {}, keep_last=2)
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path / "ckpt")] == ["step-000008",
                                                                                    "step-000009"]
    assert not conversion.exists()  # pruned with its checkpoint


def test_a_checkpoint_that_cannot_be_restored_is_one_clear_error(tmp_path, world_of_one):
    folder = checkpoint.save(tmp_path / "ckpt", 1, {"order": Refusing()}, {}, keep_last=1)
    with pytest.raises(UsageError, match="cannot restore the order: saved with another seed"):
        checkpoint.load(folder, {"order": Refusing()}, rank=0)
    with pytest.raises(UsageError, match="holds no run state"):
        checkpoint.load(folder, {"run": RunState()}, rank=0)
    old = tmp_path / "old" / "step-000001"  # a checkpoint of the pickled trainer_state.pt days
    old.mkdir(parents=True)
    (old / "trainer_state.pt").write_bytes(b"\x80\x04")
    with pytest.raises(UsageError, match="no trainer state in it"):
        checkpoint.read_state(old)


def test_a_rank_the_saved_run_did_not_have_shares_its_state_and_starts_its_rngs_afresh(tmp_path, world_of_one):
    """Saved by 1 rank, resumed by 2: rank 1 restores rank 0's shared parts (the run state) and
    seeds its RNGs from (seed, step, rank): the same every time, unlike rank 0's saved streams."""
    torch.manual_seed(1)
    folder = checkpoint.save(tmp_path / "ckpt", 5, {"run": RunState(step=5, bytes_seen=80), "rng": RNGState()},
                             {}, keep_last=1)

    def resumed_draws(rank: int) -> tuple:
        run_state = RunState()
        checkpoint.load(folder, {"run": run_state, "rng": RNGState(seed=3, run_state=run_state)}, rank=rank)
        assert run_state == RunState(step=5, bytes_seen=80)
        return draws()

    saved_stream = resumed_draws(0)
    assert resumed_draws(1) == resumed_draws(1) != saved_stream
    assert resumed_draws(1) != resumed_draws(2)
