"""The byte loss, two ways: from logits (byte_loss), and fused with the output layer (ByteHead)
so that training never holds the logits of every position.

Shapes: B batch, L predicted positions, N = B·L rows, D width of the last hidden state,
V vocabulary, n rows in one chunk.

Why fused: the 258-way head is cheap in FLOPs (2·D·V per byte) but its output is not. Computed
whole, a training step keeps (B, L, V) logits in the compute dtype, their fp32 copy for an exact
softmax and the fp32 log-probabilities for backward, and backward writes a gradient of the same
size: at T = 8192 and batch 16, about 0.5 GB written and read several times for a layer that is
~1% of the FLOPs. ByteHead(h, targets) walks the rows in chunks of CHUNK_ROWS instead, keeping
one number per row (the log of the softmax's denominator); backward computes each chunk's logits
again and turns them into both gradients (softmax − one-hot, through the two matmuls a linear
layer's backward does). Nothing of size N·V outlives a chunk.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import PAD_ID

CHUNK_ROWS = 8192  # 8 MiB of fp32 logits per chunk


def byte_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over the predicted positions whose target is not PAD.

    logits (B, L, V) from model(ids), ids (B, T): logits[:, j] already predicts ids[:, T - L + j]
    (the models shift internally, so no shift here). L = T for every model but PerceiverAR, which
    predicts only its last L = latents bytes. Every byte value, 0 included, is a target; divide by
    ln 2 for bits per byte. A batch of nothing but PAD gives NaN (0/0)."""
    targets = ids[:, ids.shape[1] - logits.shape[1]:]  # (B, L): the bytes the logits predict
    # (B·L, V) against (B·L,); fp32 so that a bf16 forward still gets an exact softmax
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID)


def bits_per_byte(loss_nats: torch.Tensor | float) -> torch.Tensor | float:
    return loss_nats / math.log(2)


class FusedHeadLoss(torch.autograd.Function):
    """h (N, D), weight (V, D), targets (N,) → the mean cross-entropy of softmax(h · weightᵀ) at the
    rows whose target is not PAD. Forward keeps one number per row (the log of the softmax's
    denominator); backward computes the logits of each chunk again, the price of never holding
    them all: one more head matmul, 2·D·V FLOPs per byte."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        counted = targets != PAD_ID  # (N,)
        log_z = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)  # (N,)
        nats = torch.zeros((), dtype=torch.float32, device=h.device)
        ctx.compute_dtype = h.dtype  # what F.linear computes in: h's, or autocast's (bf16)
        for rows in chunks(h.shape[0]):
            logits = F.linear(h[rows], weight)  # (n, V) in the compute dtype
            ctx.compute_dtype = logits.dtype
            logits = logits.float()  # fp32, as byte_loss's exact softmax
            log_z[rows] = logits.logsumexp(dim=-1)
            # PAD is an id of the vocabulary: its rows are computed like the others, then not counted
            picked = logits.gather(1, targets[rows, None])[:, 0]  # (n,)
            nats += ((log_z[rows] - picked) * counted[rows]).sum()
        ctx.save_for_backward(h, weight, targets, log_z)
        return nats / counted.sum()  # NaN for a batch of nothing but PAD, as byte_loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        h, weight, targets, log_z = ctx.saved_tensors
        dtype = ctx.compute_dtype
        counted = targets != PAD_ID  # (N,)
        scale = grad_loss / counted.sum().clamp(min=1)  # d loss / d nats of a counted row
        w = weight.to(dtype)  # (V, D)
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None  # (N, D)
        summed = torch.promote_types(weight.dtype, torch.float32)  # the weight's gradient sums in fp32 at least
        grad_w = torch.zeros(weight.shape, dtype=summed, device=weight.device) if ctx.needs_input_grad[1] else None
        for rows in chunks(h.shape[0]):
            h_c = h[rows].to(dtype)  # (n, D)
            # d nats / d logits = softmax − one-hot, at counted rows
            g = F.linear(h_c, w).float().sub_(log_z[rows, None]).exp_()  # (n, V): the softmax, in place
            g[torch.arange(g.shape[0], device=g.device), targets[rows]] -= 1
            g = g.mul_(counted[rows, None] * scale).to(dtype)  # (n, V)
            if grad_h is not None:
                grad_h[rows] = g @ w  # (n, D)
            if grad_w is not None:
                grad_w += (g.t() @ h_c).to(summed)  # (V, D), summed over chunks
        return grad_h, grad_w.to(weight.dtype) if grad_w is not None else None, None


def chunks(rows: int):
    """Slices of at most CHUNK_ROWS rows covering 0..rows."""
    return (slice(start, start + CHUNK_ROWS) for start in range(0, rows, CHUNK_ROWS))


class ByteHead(nn.Linear):
    """The output layer, D → V without bias. head(h) gives logits; head(h, targets) gives the
    training loss without them: (mean nats over the non-PAD targets, their count)."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__(dim, vocab_size, bias=False)

    def forward(self, h: torch.Tensor, targets: torch.Tensor | None = None):
        """h (..., D) → logits (..., V); with targets (...), (loss (), count ())."""
        if targets is None:
            return super().forward(h)
        targets = targets.flatten()  # (N,)
        loss = FusedHeadLoss.apply(h.flatten(0, -2), self.weight, targets)  # h as (N, D)
        return loss, (targets != PAD_ID).sum()
