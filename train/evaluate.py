"""Bits per byte: one definition, for training metrics, validation and `megabyte eval`.

    bpb = Σ −log2 p(target) / number of targets, both over the same positions: every position the
          model predicts (the last L of the T ids it reads; L = T but for PerceiverAR) whose target
          is not PAD. Targets are the 256 byte values and the document boundary (ending a
          document is predicted like a byte, and trained on), so bpb = byte_loss / ln 2.

`evaluate` scores the validation loader's batches, in which every target of the set stands once
(PAD fills the rest; a PerceiverAR scores only the last `latents` of each row, `megabyte eval`
every byte); sums are all-reduced, so every rank returns the same numbers. Windowed evaluation
(plain, sliding and strided over whole streams) is in train/windows.py, with the same `target_nats`.
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


@torch.no_grad()
def evaluate(model, batches, device: torch.device, max_batches: int = 0) -> dict:
    """{"bpb", "targets", "bpb/<modality>"...}; model(ids) → logits (B, L, V)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=device)  # per modality: nats, targets
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            break
        ids = batch["ids"].to(device)  # (B, T)
        nats, counted = target_nats(model(ids), ids)  # (B, L) each
        for row, modality in enumerate(batch["modality"]):
            if modality in MODALITIES:  # an all-PAD filler row has no modality to count
                m = MODALITIES.index(modality)
                sums[m, 0] += nats[row].sum().double()
                sums[m, 1] += counted[row].sum().double()
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
