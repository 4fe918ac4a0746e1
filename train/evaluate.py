"""Bits per byte over a validation stream: every byte of the validation set is a target once.

The numerator is the cross-entropy of every non-PAD target (document boundaries included: ending a
document is part of modelling the corpus), the denominator counts the real bytes (ids < 256), so
the figure is comparable across packings. Sums are all-reduced, so every rank returns the same
numbers; the validation loader gives every rank the same number of batches.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.format.vocab import NUM_BYTES, PAD_ID

MODALITIES = ("text", "image", "audio")


@torch.no_grad()
def evaluate(model, batches, device: torch.device, max_batches: int = 0) -> dict:
    """{"bpb", "bytes", "bpb/<modality>"...}; model(ids) → logits (B, T, V)."""
    was_training = model.training
    model.eval()
    # per modality: [nats, bytes]
    sums = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=device)
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            break
        ids = batch["ids"].to(device)  # (B, T)
        logits = model(ids)  # (B, T, V)
        nats = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten(), ignore_index=PAD_ID,
                               reduction="none").view(ids.shape)  # (B, T), 0 at PAD
        real_bytes = (ids < NUM_BYTES).sum(dim=1)  # (B,)
        for row, modality in enumerate(batch["modality"]):
            if modality in MODALITIES:  # an all-PAD filler row has no modality to count
                m = MODALITIES.index(modality)
                sums[m, 0] += nats[row].sum().double()
                sums[m, 1] += real_bytes[row].double()
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    total_nats, total_bytes = sums.sum(dim=0).tolist()
    result = {"bpb": total_nats / max(total_bytes, 1) / math.log(2), "bytes": int(total_bytes)}
    for m, modality in enumerate(MODALITIES):
        nats, count = sums[m].tolist()
        if count:
            result[f"bpb/{modality}"] = nats / count / math.log(2)
    return result
