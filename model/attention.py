"""Attention kernels and rotary positions, the functions model/layers.py's attention calls:
matmul_attention (SDPA as plain matmuls, for the local model's short sequences),
sliding_window_attention (SpaceByte's local window in blocks: T·2W, not T²), rotary_table and
rotate (the positions of MegaByte's cross-patch attention).

Shapes: N batch (patches folded in), nh heads, n queries, S keys, T positions, hs head size.
"""

import math

import torch
import torch.nn.functional as F


def rotary_table(positions: int, hs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding (Su et al. 2021): each pair of dimensions (i, i + hs/2) of a query
    or key at position t turns by the angle t · 10000^(-2i/hs), so that the score of a query and a
    key depends only on how far apart they are. → cos and sin (positions, hs) for rotate(): the
    cosine of pair i's angle in dimensions i and i + hs/2, its sine negated in dimension i."""
    freq = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float32) / hs)  # (hs/2,)
    angle = torch.arange(positions, dtype=torch.float32)[:, None] * freq  # (positions, hs/2)
    return torch.cat([angle.cos(), angle.cos()], dim=-1), torch.cat([-angle.sin(), angle.sin()], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., S, hs) turned by rotary_table's cos and sin of its S positions (S, hs): the pair
    (x1, x2) becomes (x1·cos − x2·sin, x2·cos + x1·sin)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., S, hs/2) each
    return x * cos.to(x.dtype) + torch.cat([x2, x1], dim=-1) * sin.to(x.dtype)  # (..., S, hs)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                     is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """F.scaled_dot_product_attention as plain batched matmuls, for the local model's short
    sequences (P ≤ 16 queries), which a flash kernel would pad up to its block size.
    q (N, nh, n, hs), k and v (N, nh, S, hs), attn_mask broadcast to (N, nh, n, S) with True where a
    query may look → (N, nh, n, hs). is_causal aligns the queries with the end of the keys (SDPA's
    with their start: the same where it is used, n = S)."""
    n, S, hs = q.shape[-2], k.shape[-2], q.shape[-1]
    if is_causal:
        attn_mask = torch.ones(n, S, dtype=torch.bool, device=q.device).tril(diagonal=S - n)  # (n, S)
    # the softmax in fp32 at least: bf16 scores would round the probabilities (float64 stays float64)
    dtype = torch.promote_types(q.dtype, torch.float32)
    att = (q @ k.transpose(-2, -1)).to(dtype) * (1.0 / math.sqrt(hs))  # (N, nh, n, S)
    if attn_mask is not None:
        att = att.masked_fill(~attn_mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    if dropout_p:
        att = F.dropout(att, dropout_p)
    return att.to(v.dtype) @ v  # (N, nh, n, hs)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, attend=None,
                             dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention in which a query sees its own position and the window - 1 before it, for
    queries and keys at the same T positions: q, k, v (N, nh, T, hs) → (N, nh, T, hs). The
    positions are cut into blocks of W = window (the last one padded); block i's queries attend to
    blocks i-1 and i only, 2W keys, so attention costs T·2W, not the T² of a band mask over all T.
    attend: an F.scaled_dot_product_attention-like kernel (that one by default)."""
    attend = attend or F.scaled_dot_product_attention
    N, nh, T, hs = q.shape
    W = window
    nb = -(-T // W)  # blocks
    pad = nb * W - T

    def blocks(t):  # (N, nh, T, hs) → (N·nb, nh, W, hs)
        t = F.pad(t, (0, 0, 0, pad)).view(N, nh, nb, W, hs)
        return t.transpose(1, 2).reshape(N * nb, nh, W, hs)

    def with_previous(t):  # (N, nh, T, hs) → (N·nb, nh, 2W, hs): block i-1 (zeros before block 0), block i
        t = F.pad(t, (0, 0, W, pad)).view(N, nh, nb + 1, W, hs)
        t = torch.cat([t[:, :, :-1], t[:, :, 1:]], dim=3)  # (N, nh, nb, 2W, hs)
        return t.transpose(1, 2).reshape(N * nb, nh, 2 * W, hs)

    # query a of a block (slot W+a of the pair) sees slots a+1..W+a: positions a-W+1..a of its block
    a, j = torch.arange(W, device=q.device)[:, None], torch.arange(2 * W, device=q.device)[None]
    mask = ((j > a) & (j <= a + W)).expand(nb, W, 2 * W).clone()  # (nb, W, 2W)
    mask[0, :, :W] = False  # block 0 has no previous block: its slots are padding
    mask = mask[None, :, None].expand(N, -1, -1, -1, -1).reshape(N * nb, 1, W, 2 * W)
    y = attend(blocks(q), with_previous(k), with_previous(v), attn_mask=mask, dropout_p=dropout_p)  # (N·nb, nh, W, hs)
    return y.view(N, nb, nh, W, hs).transpose(1, 2).reshape(N, nh, nb * W, hs)[:, :, :T]
