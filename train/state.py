"""The trainer's own resumable state: the run's counters and this process's random generators.

Both are Statefuls (see train.checkpoint): state_dict() gives plain data (numbers, lists, dicts and
tensors), load_state_dict() puts it back.
"""

import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    bytes_seen: int = 0  # non-PAD targets trained on, all ranks together

    def state_dict(self) -> dict:
        return {"step": self.step, "bytes_seen": self.bytes_seen}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.bytes_seen = int(state["step"]), int(state["bytes_seen"])


class RNGState:
    """This process's generators: Python's, NumPy's and torch's (the CPU's, and CUDA's if any).
    Dropout draws from torch's; the loader seeds its own from the config, so it needs none.

    A PerRank part (train.checkpoint): a rank that the saved run did not have (it grew from N to
    M ranks) seeds every generator from (run seed, step resumed at, rank) instead: deterministic,
    and unlike both the streams of the other ranks and those of a run started at this rank."""

    def __init__(self, seed: int = 0, run_state: RunState | None = None):
        self.seed, self.run_state = seed, run_state  # the run state is restored before this part

    def state_dict(self) -> dict:
        version, internal, gauss_next = random.getstate()
        numpy = np.random.get_state(legacy=False)  # MT19937: a 624-word key and a position
        state = {"python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                            "gauss_next": gauss_next},
                 "numpy": {"key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
                           "pos": numpy["state"]["pos"], "has_gauss": numpy["has_gauss"],
                           "gauss": numpy["gauss"]},
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def start_afresh(self, rank: int) -> None:
        step = self.run_state.step if self.run_state else 0
        seed = int(np.random.SeedSequence([self.seed, step, rank]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # the CUDA generators too

    def load_state_dict(self, state: dict) -> None:
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
        numpy = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937",
                             "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                             "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
