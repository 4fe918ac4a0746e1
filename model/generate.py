"""Sampling bytes from any model of the family with their KV caches.

Shapes: B prompts, L prompt bytes, N new bytes, V vocabulary, W bytes in the window.

Every model exposes the same decoding calls, so this loop knows nothing of patches:
    prefill(ids (B, W), max_len) -> (logits (B, V) for byte W, state)
    decode_step(next_ids (B,), state) -> logits (B, V) for the byte after next_ids
    out_of_global_positions(state) -> whether the newest logits lack the global model's output
MegaByte runs one global step per completed patch and one local step per byte; the baseline one
step of its whole stack per byte. Caches are allocated once per window.

A model reads at most seq_len bytes. Past that, generation goes on in a sliding window: when the
window is full, its oldest whole patches are dropped until `keep` bytes (half the context by
default) are left, and the caches are filled again from those (one prefill). Dropping whole
patches keeps every byte in the slot of its patch that it had. A prompt longer than the context
keeps its last window in the same way. SpaceByte has T_G global positions per window, one per
boundary: when a window holds more boundaries, the window slides as when it is full, and a window
that still holds too many is read again with half the bytes, so that every byte is generated with
the global model's output, as every byte it was trained on.
"""

import math
from collections import defaultdict

import torch
import torch.nn as nn

from model.progress import Progress


def check_generation(max_new_bytes: int, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, seed: int | None = None, keep: int | None = None,
                     context: int | None = None) -> None:
    """ValueError, saying what to change, for arguments that make no sense: the one check of
    generation arguments for callers of `generate` (`megabyte generate` checks its flags' ranges
    as it parses them, tools/arguments.py).
    keep is checked against the context when both are given."""
    if max_new_bytes < 1:
        raise ValueError(f"cannot generate {max_new_bytes} bytes: ask for at least 1")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature {temperature}: must be 0 (greedy) or above, and finite")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top-k {top_k}: must be at least 1 (the k likeliest bytes are kept)")
    if top_p is not None and not 0 < top_p <= 1:  # also refuses nan
        raise ValueError(f"top-p {top_p}: must be above 0 and at most 1 (the probability mass kept)")
    if seed is not None and not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed}: must be 0 to 2**64 - 1")
    if keep is not None and context is not None and not 0 <= keep < context:
        raise ValueError(f"keep={keep} must leave room in the context: 0 <= keep < seq_len={context}")


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


def window_start(length: int, patch_size: int, room: int) -> int:
    """The first byte of the last window of at most `room` bytes out of `length` that starts on a
    patch boundary (a multiple of patch_size)."""
    return max(0, -(-(length - room) // patch_size) * patch_size)


def read_window(model: nn.Module, ids: torch.Tensor, end: int, room: int, max_len: int,
                graphs: dict) -> tuple[int, torch.Tensor, dict]:
    """Prefill the last window of ids[:, :end] that holds at most `room` bytes and starts on a
    patch boundary, with room for max_len bytes of ids in all: (its start, logits (B, V) for byte
    end, state). While the model runs out of global positions there, half the room (a window of
    one byte never does)."""
    while True:
        start = window_start(end, model.config.patch_size, room)
        logits, state = model.prefill(ids[:, start:end], min(model.config.seq_len, max_len - start), **graphs)
        if not model.out_of_global_positions(state):
            return start, logits, state
        room //= 2


@torch.no_grad()
def generate_ids(model: nn.Module, prompt: torch.Tensor, max_new_bytes: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, stop_at_boundary: bool = True,
                 keep: int | None = None, cuda_graphs: bool = False,
                 progress: Progress | None = None) -> torch.Tensor:
    """prompt (B, L) of byte ids → (B, L + n) with n ≤ max_new_bytes. A row that produced the
    boundary id has PAD after it; generation ends when every row has stopped or after N bytes.
    keep: at most how many bytes the window keeps when it slides past the context, rounded down to
    whole patches (default: half the context). cuda_graphs: MegaByte's local step (once per byte)
    runs as CUDA graphs, the same numbers with one launch per byte (model/cuda_graphs.py).
    progress advances by B per byte sampled (the rows that stopped included: no sync to count them)."""
    config = model.config
    B, L = prompt.shape
    context = config.seq_len
    keep = context // 2 if keep is None else keep
    check_generation(max_new_bytes, temperature, top_k, top_p, keep=keep, context=context)
    if cuda_graphs and not model.decodes_with_cuda_graphs:
        raise ValueError(f"cuda_graphs: {config.architecture} has no local step to capture "
                         "(megabyte and no_global have)")
    if cuda_graphs and prompt.device.type != "cuda":
        raise ValueError(f"cuda_graphs needs the model on a CUDA device, not {prompt.device.type}")
    graphs = {"cuda_graphs": True} if cuda_graphs else {}  # only the models that have it take the keyword
    # only bytes may be sampled (and the boundary when it means stop): PAD is never a target
    banned = torch.ones(config.vocab_size, dtype=torch.bool, device=prompt.device)
    banned[:256] = False
    if stop_at_boundary:
        banned[config.boundary_id] = False
    ids = torch.cat([prompt, prompt.new_full((B, max_new_bytes), config.pad_id)], dim=1)  # (B, L + N)
    stopped = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    # room for the next byte in the first window
    start, logits, state = read_window(model, ids, L, context - 1, L + max_new_bytes, graphs)
    for end in range(L + 1, L + max_new_bytes + 1):  # ids[:, :end] once this byte is sampled
        next_ids = sample(logits.masked_fill(banned, float("-inf")), temperature, top_k, top_p, generator)
        next_ids = next_ids.masked_fill(stopped, config.pad_id)  # (B,)
        ids[:, end - 1] = next_ids
        stopped |= next_ids == config.boundary_id
        if progress is not None:
            progress.update(B)
        if end == L + max_new_bytes or (stop_at_boundary and bool(stopped.all())):
            break
        if end - start < context:
            logits = model.decode_step(next_ids, state)  # the rows that stopped decode PAD, unread
        if end - start == context or model.out_of_global_positions(state):  # slide the window, read it again
            start, logits, state = read_window(model, ids, end, keep, L + max_new_bytes, graphs)
    return ids[:, :end]


def generate(model: nn.Module, prompt: torch.Tensor | list[bytes], max_new_bytes: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, generator: torch.Generator | None = None,
             stop_at_boundary: bool = True, keep: int | None = None,
             cuda_graphs: bool = False, progress: bool = False) -> torch.Tensor | list[bytes]:
    """Continue prompts with any model of the family, past its context if asked (see generate_ids).

    prompt: a LongTensor (B, L) of ids → a LongTensor (B, L + n) (see generate_ids); or a list of
    byte strings of any lengths → a list with each one's new bytes (see generate_bytes).
    seed makes sampling repeatable (ignored when a generator is given); temperature 0 is greedy.
    progress: show on stderr how far it is (model/progress.py: a bar on a terminal, a line at the
    start and one at the end with bytes per second elsewhere).
    The model runs in eval mode (no dropout) and is put back in its former mode afterwards."""
    device = next(model.parameters()).device
    check_generation(max_new_bytes, temperature, top_k, top_p, seed)  # before the seed is used
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    rows = len(prompt)
    title = f"generating {max_new_bytes:,} bytes" + (f" after each of {rows} prompts" if rows > 1 else "")
    try:
        with Progress(title, rows * max_new_bytes, progress) as shown:
            kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                          stop_at_boundary=stop_at_boundary, keep=keep, cuda_graphs=cuda_graphs, progress=shown)
            if isinstance(prompt, torch.Tensor):
                out = generate_ids(model, prompt.to(device), max_new_bytes, **kwargs)
            else:
                out = generate_bytes(model, prompt, max_new_bytes, **kwargs)
            shown.finish()
        return out
    finally:
        model.train(was_training)


def generate_bytes(model: nn.Module, prompts: list[bytes], max_new_bytes: int, **kwargs) -> list[bytes]:
    """Each prompt's new bytes (the boundary not included), by generate_ids with kwargs. Prompts of
    equal length run as one batch (MegaByte's patches must line up within a batch)."""
    device = next(model.parameters()).device
    by_length = defaultdict(list)  # prompt length → indices of the prompts of that length
    for index, text in enumerate(prompts):
        by_length[len(text)].append(index)
    continuations: list[bytes] = [b""] * len(prompts)
    for length, indices in sorted(by_length.items()):
        ids = torch.tensor([list(prompts[i]) for i in indices], dtype=torch.long, device=device)
        ids = ids.view(len(indices), length)  # (b, L), also for empty prompts
        out = generate_ids(model, ids, max_new_bytes, **kwargs)[:, length:].tolist()
        for i, row in zip(indices, out):
            stop = next((j for j, x in enumerate(row) if x > 255), len(row))
            continuations[i] = bytes(row[:stop])
    return continuations
