"""Sampling bytes from MegaByte or the baseline with their KV caches.

Shapes: B prompts, L prompt bytes, N new bytes, V vocabulary.

Both models expose the same two decoding calls, so this loop knows nothing of patches:
    prefill(ids (B, L), max_len) -> (logits (B, V) for byte L, state)
    decode_step(next_ids (B,), state) -> logits (B, V) for the byte after next_ids
MegaByte runs one global step per completed patch and one local step per byte; the baseline one
step of its whole stack per byte. Caches are allocated once for L + N positions.
"""

from collections import defaultdict

import torch
import torch.nn as nn


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) → ids (B,). temperature 0 is greedy; top_k keeps the k likeliest ids; top_p
    keeps the smallest set of likeliest ids whose probability reaches top_p (nucleus sampling)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # drop an id when the ids before it already reach top_p (so the likeliest always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


@torch.no_grad()
def generate_ids(model: nn.Module, prompt: torch.Tensor, max_new_bytes: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, stop_at_boundary: bool = True) -> torch.Tensor:
    """prompt (B, L) of byte ids → (B, L + n) with n ≤ max_new_bytes. A row that produced the
    boundary id has PAD after it; generation ends when every row has stopped or after N bytes."""
    config = model.config
    B, L = prompt.shape
    if max_new_bytes <= 0:
        return prompt
    # only bytes may be sampled (and the boundary when it means stop): PAD is never a target
    banned = torch.ones(config.vocab_size, dtype=torch.bool, device=prompt.device)
    banned[:256] = False
    if stop_at_boundary:
        banned[config.boundary_id] = False
    new = prompt.new_full((B, max_new_bytes), config.pad_id)  # (B, N)
    stopped = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    logits, state = model.prefill(prompt, L + max_new_bytes)
    for i in range(max_new_bytes):
        next_ids = sample(logits.masked_fill(banned, float("-inf")), temperature, top_k, top_p, generator)
        next_ids = next_ids.masked_fill(stopped, config.pad_id)  # (B,)
        new[:, i] = next_ids
        stopped |= next_ids == config.boundary_id
        if i == max_new_bytes - 1 or (stop_at_boundary and bool(stopped.all())):
            break
        logits = model.decode_step(next_ids, state)  # the rows that stopped decode PAD, unread
    return torch.cat([prompt, new[:, : i + 1]], dim=1)


def generate(model: nn.Module, prompt: torch.Tensor | list[bytes], max_new_bytes: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, generator: torch.Generator | None = None,
             stop_at_boundary: bool = True) -> torch.Tensor | list[bytes]:
    """Continue prompts with MegaByte or ByteTransformer.

    prompt: a LongTensor (B, L) of ids → a LongTensor (B, L + n) (see generate_ids); or a list of
    byte strings of any lengths → a list with each one's new bytes (the boundary not included).
    Prompts of equal length run as one batch (MegaByte's patches must line up within a batch).
    seed makes sampling repeatable (ignored when a generator is given); temperature 0 is greedy.
    The model runs in eval mode (no dropout) and is put back in its former mode afterwards."""
    device = next(model.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                      stop_at_boundary=stop_at_boundary)
        if isinstance(prompt, torch.Tensor):
            return generate_ids(model, prompt.to(device), max_new_bytes, **kwargs)
        by_length = defaultdict(list)  # prompt length → indices of the prompts of that length
        for index, text in enumerate(prompt):
            by_length[len(text)].append(index)
        continuations: list[bytes] = [b""] * len(prompt)
        for length, indices in sorted(by_length.items()):
            ids = torch.tensor([list(prompt[i]) for i in indices], dtype=torch.long, device=device)
            ids = ids.view(len(indices), length)  # (b, L), also for empty prompts
            out = generate_ids(model, ids, max_new_bytes, **kwargs)[:, length:].tolist()
            for i, row in zip(indices, out):
                stop = next((j for j, x in enumerate(row) if x > 255), len(row))
                continuations[i] = bytes(row[:stop])
        return continuations
    finally:
        model.train(was_training)
