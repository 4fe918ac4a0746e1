"""The byte loss, two ways: from logits (byte_loss), and fused with the output layer (ByteHead)
so that training never holds the logits of every position.

Shapes: B batch, L predicted positions, N = B·L rows, D width of the last hidden state,
V vocabulary, n rows in one chunk.

Why fused: the 258-way head is cheap in FLOPs (2·D·V per byte) but its output is not. Computed
whole, a training step keeps (B, L, V) logits in the compute dtype, their fp32 copy for an exact
softmax, the fp32 log-probabilities for backward and a gradient of the same size: at T = 8192
and batch 16, about 0.5 GB written and read several times for a layer that is ~1% of the
FLOPs. ByteHead(h, targets) walks the rows in chunks of CHUNK_ROWS instead; for each chunk it
computes the logits, the loss, and at once the gradients with respect to h and the head's weight
(softmax − one-hot, through the two matmuls a linear layer's backward does). Backward only scales
what forward left. What is kept is the size of h plus one V × D matrix.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import PAD_ID

CHUNK_ROWS = 16384  # 16 MiB of fp32 logits per chunk


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
    rows whose target is not PAD, with both gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        counted = targets != PAD_ID  # (N,)
        count = counted.sum()
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None  # (N, D)
        summed = torch.promote_types(weight.dtype, torch.float32)  # the weight's gradient sums in fp32 at least
        grad_w = torch.zeros(weight.shape, dtype=summed, device=weight.device) if ctx.needs_input_grad[1] else None
        nats = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            h_c, t_c, keep = h[rows], targets[rows], counted[rows]  # (n, D), (n,), (n,)
            logits = F.linear(h_c, weight)  # (n, V) in the compute dtype (bf16 under autocast)
            log_p = logits.float().log_softmax(dim=-1)  # (n, V) fp32, as byte_loss's exact softmax
            # PAD is an id of the vocabulary: its rows are computed like the others, then not counted
            nats -= (log_p.gather(1, t_c[:, None])[:, 0] * keep).sum()
            if grad_h is None and grad_w is None:
                continue
            # d(mean nats)/d logits = (softmax − one-hot) / count at counted rows, 0 elsewhere
            g = log_p.exp_()  # (n, V), reusing log_p's memory
            g[torch.arange(g.shape[0], device=g.device), t_c] -= 1
            g = (g * (keep[:, None] / count.clamp(min=1))).to(logits.dtype)  # (n, V)
            if grad_h is not None:
                grad_h[rows] = (g @ weight.to(g.dtype)).to(h.dtype)  # (n, D)
            if grad_w is not None:
                grad_w += (g.t() @ h_c.to(g.dtype)).to(summed)  # (V, D), summed over chunks
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return nats / count  # NaN for a batch of nothing but PAD, as byte_loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        grad_h = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        grad_w = (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None
        return grad_h, grad_w, None


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
