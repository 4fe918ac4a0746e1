"""Bits per byte: one definition, for training metrics, validation and `megabyte eval`.

    bpb = Σ −log2 p(target) / number of targets, both over the same positions whose target is not
          PAD. Targets are the 256 byte values and the document boundary (ending a document is
          predicted like a byte, and trained on), so bpb = byte_loss / ln 2.

A forward reads T ids and predicts the last L of them (L = T but for PerceiverAR, whose L is its
latents): a training step scores those L. `evaluate` scores every position of every row of the
validation loader's batches, in which every target of the set stands once (PAD fills the rest):
a row whose forward predicts L < T runs in plain windows (see `row_nats`). Sums are
all-reduced, so every rank returns the same numbers. Windowed evaluation of whole streams (plain,
sliding and strided; `megabyte eval`) is in train/windows.py, with the same `target_nats`.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.format.vocab import PAD_ID

MODALITIES = ("text", "image", "audio")


def predicted_targets(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, T) → the ids that logits (B, L, V) predict, (B, L): the last L (the forward contract)."""
    return ids[:, ids.shape[1] - logits.shape[1]:]


def target_nats(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nats, counted), both (B, L): the cross-entropy of every predicted position (0 at PAD) and
    whether it counts (its target is not PAD)."""
    targets = predicted_targets(logits, ids)  # (B, L)
    # fp32 so that a bf16 forward still gets an exact softmax; (B, V, L) against (B, L)
    nats = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
    return nats, targets != PAD_ID


def bpb(nats: float, targets: int) -> float:
    return nats / max(targets, 1) / math.log(2)


def row_nats(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nats, targets), both (B,) float64: per row of ids (B, T), over every position whose target
    is not PAD.

    A forward that predicts only its last L < T positions (PerceiverAR, L = latents) runs on the
    windows that train/windows.py's plain mode (stride L) runs on a stream that is this row alone:
    ids[:, max(0, e - T):min(e, T)] for e = L, 2L, ... up to the first e ≥ T (⌈T/L⌉ forwards), each
    scoring its positions from e - L on. So on a stream's first T ids the two give every position
    the same context; further into a stream, plain mode's windows reach back up to T − L ids
    before a row's start, which the row does not have here. For L = T (every other architecture)
    one forward scores the row, and the plain windows of concatenated text are the loader's rows."""
    T = ids.shape[1]
    whole = model(ids)  # (B, L, V): its L tells what the windows are
    L = whole.shape[1]
    row_sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)  # (B,)
    row_targets = torch.zeros_like(row_sums)  # (B,)
    for end in range(L, T + L, L):
        start, stop = max(0, end - T), min(end, T)
        # (B, n, V), n = min(L, stop - start); the whole row's forward is not used when T % L ≠ 0
        logits = whole if (start, stop) == (0, T) else model(ids[:, start:stop])
        nats, counted = target_nats(logits, ids[:, start:stop])  # (B, n) each: positions stop-n .. stop-1
        new = end - L - (stop - nats.shape[1])  # the first position no earlier window scored
        row_sums += nats[:, new:].sum(dim=1).double()
        row_targets += counted[:, new:].sum(dim=1).double()
    return row_sums, row_targets


@torch.no_grad()
def evaluate(model, batches, device: torch.device, max_batches: int = 0) -> dict:
    """{"bpb", "targets", "bpb/<modality>"...} over every position of the batches' rows (see
    row_nats); model(ids (B, T')) → logits (B, L, V) for the last L of the T' ids."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=device)  # per modality: nats, targets
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            break
        ids = batch["ids"].to(device)  # (B, T)
        nats, targets = row_nats(model, ids)  # (B,) each
        for row, modality in enumerate(batch["modality"]):
            if modality in MODALITIES:  # an all-PAD filler row has no modality to count
                m = MODALITIES.index(modality)
                sums[m, 0] += nats[row]
                sums[m, 1] += targets[row]
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    total_nats, total_targets = sums.sum(dim=0).tolist()
    result = {"bpb": bpb(total_nats, total_targets), "targets": int(total_targets)}
    for m, modality in enumerate(MODALITIES):
        nats, count = sums[m].tolist()
        if count:
            result[f"bpb/{modality}"] = bpb(nats, count)
    return result
