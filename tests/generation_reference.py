"""generate_ids without caches, for tests/test_model_family.py and tests/test_spacebyte.py: the
whole forward for every new byte, over the window generate_ids reads."""

import torch
import torch.nn as nn

from model import sample
from model.generate import window_start


def next_window(ids: torch.Tensor, start: int) -> torch.Tensor:
    """The forward's input for the next byte: ids from start, and a slot for it (logits[:, -1] predicts it)."""
    return nn.functional.pad(ids[:, start:], (0, 1), value=0)


def lacks_global_output(model: nn.Module, window: torch.Tensor) -> bool:
    """Would the prediction of the next byte (the window's last position) be past SpaceByte's T_G
    global positions? Never for the other architectures."""
    return model.config.architecture == "spacebyte" and bool(model.patches(window)[1][:, -1].any())


def fitting_start(model: nn.Module, ids: torch.Tensor, room: int) -> int:
    """The last `room` bytes from a patch boundary, halved until the next byte's prediction has its
    global output."""
    start = window_start(ids.shape[1], model.config.patch_size, room)
    while lacks_global_output(model, next_window(ids, start)):
        room //= 2
        start = window_start(ids.shape[1], model.config.patch_size, room)
    return start


def reference_ids(model: nn.Module, prompt: torch.Tensor, new_bytes: int, keep: int | None = None,
                  temperature: float = 0.0) -> torch.Tensor:
    """The window slides when full (to `keep` bytes, half the context by default) and when the
    prediction would have no global output; bytes only (no early stop), sampled as generate_ids
    samples with a generator seeded 0."""
    context = model.config.seq_len
    keep = context // 2 if keep is None else keep
    generator = torch.Generator().manual_seed(0)
    ids, start = prompt, fitting_start(model, prompt, context - 1)
    for _ in range(new_bytes):
        if ids.shape[1] - start == context or lacks_global_output(model, next_window(ids, start)):
            start = fitting_start(model, ids, keep)
        logits = model(next_window(ids, start))[:, -1]  # (B, V)
        logits[:, 256:] = float("-inf")
        ids = torch.cat([ids, sample(logits, temperature, generator=generator)[:, None]], dim=1)
    return ids
