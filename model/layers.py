"""The transformer pieces every model is built from: attention (with MegaByte's cross-patch
option and PerceiverAR's last-n queries; its kernels in model/attention.py), MLP, pre-norm block,
causal stack, a KV cache for generation, and the convolutional patch encoder.

Shapes: B batch, K patches (the local model's input is (B, K, P, C)), T positions in this call,
S positions in the KV cache including this call (keys), n ≤ T positions that ask (queries),
C width, nh heads, hs = C/nh head size, r positions of the previous patch, V vocabulary.
"""

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from model.attention import matmul_attention, rotary_table, rotate, sliding_window_attention
from model.config import MegaByteConfig


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    # cut at ±2 std so that no weight starts far out in the tail
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def make_norm(config: MegaByteConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    return nn.LayerNorm(dim, bias=config.bias)


def make_activation(config: MegaByteConfig) -> nn.Module:
    # swiglu gates inside the MLP; wherever no gate fits (the conv encoder) it means GELU
    return nn.ReLU() if config.activation == "relu" else nn.GELU()


class KVCache:
    """Keys and values of one attention layer. The buffers are allocated once, for max_len
    positions, on the first update (with that call's dtype, so autocast and .double() work), so
    memory is linear in the generated length and appending copies only the new positions."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.k = self.v = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, nh, T, hs = k.shape
        if self.k is None:
            self.k = k.new_empty(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        if self.length + T > self.max_len:
            raise RuntimeError(f"KV cache full: {self.length} + {T} positions > max_len={self.max_len}")
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        return self.k[:, :, :self.length], self.v[:, :, :self.length]  # (B, nh, S, hs)

    def keep_last(self, n: int):
        """Keep only the last n positions (0: empty it), moved to the front; the buffers stay, as
        the local model reuses its caches for every patch (n = r with cross-patch attention)."""
        if n:
            self.k[:, :, :n] = self.k[:, :, self.length - n:self.length].clone()
            self.v[:, :, :n] = self.v[:, :, self.length - n:self.length].clone()
        self.length = n


class CausalSelfAttention(nn.Module):
    """Causal multi-head attention. x is (B, T, C), or (B, K, P, C) for the local model, whose
    patches attend within themselves (folded into the batch) and, with cross_patch = r > 0, also
    to the last r positions of the previous patch (MegaByte §2.3), with rotary positions.
    kernel: "sdpa" or "matmul" (matmul_attention), the same attention by another kernel.
    window = W > 0: sliding-window attention (SpaceByte's local blocks), a query sees its own
    position and the W - 1 before it; 0: all earlier positions."""

    def __init__(self, config: MegaByteConfig, dim: int, heads: int, cross_patch: int = 0, kernel: str = "sdpa",
                 window: int = 0):
        super().__init__()
        self.heads = heads
        self.cross_patch = cross_patch
        self.kernel = kernel
        self.window = window
        self.dropout = config.dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.bias)
        self.proj = nn.Linear(dim, dim, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)
        if cross_patch:  # rotary angles of the r + P key positions, once (not saved: they follow from the config)
            cos, sin = rotary_table(cross_patch + config.patch_size, dim // heads)  # (r+P, hs) each
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, C) → (N, nh, T, hs), every leading dimension folded into N."""
        T, C = x.shape[-2:]
        return x.reshape(-1, T, self.heads, C // self.heads).transpose(1, 2)  # (N, nh, T, hs)

    def project(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q for the last n positions only (PerceiverAR's latents), k and v for all T."""
        C = x.shape[-1]
        if n == x.shape[-2]:
            q, k, v = self.qkv(x).split(C, dim=-1)  # (..., T, C) each
        else:  # the same weights, without computing queries nobody asks
            w_q, w_kv = self.qkv.weight.split([C, 2 * C])
            b_q, b_kv = self.qkv.bias.split([C, 2 * C]) if self.qkv.bias is not None else (None, None)
            q = F.linear(x[..., x.shape[-2] - n:, :], w_q, b_q)  # (..., n, C)
            k, v = F.linear(x, w_kv, b_kv).split(C, dim=-1)  # (..., T, C) each
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (N, nh, n|T, hs)

    def with_previous_patch(self, k: torch.Tensor, v: torch.Tensor, B: int, K: int):
        """k, v (B·K, nh, P, hs) → keys and values of the previous patch's last r positions and
        this patch's P, (B·K, nh, r+P, hs), and the mask (B·K, 1, P, r+P) that lets slot p see
        those r (none for patch 0) and slots ≤ p. Gradients flow into the previous patch."""
        r, P = self.cross_patch, k.shape[2]

        def prepend(t):
            t = t.view(B, K, *t.shape[1:])  # (B, K, nh, P, hs)
            prev = F.pad(t[:, :-1, :, P - r:], (0, 0, 0, 0, 0, 0, 1, 0))  # (B, K, nh, r, hs): zeros before patch 0
            return torch.cat([prev, t], dim=3).flatten(0, 1)  # (B·K, nh, r+P, hs)

        mask = torch.ones(K, 1, P, r + P, dtype=torch.bool, device=k.device).tril(diagonal=r)
        mask[0, :, :, :r] = False  # patch 0 has no previous patch
        return prepend(k), prepend(v), mask.expand(B, -1, -1, -1, -1).flatten(0, 1)  # mask (B·K, 1, P, r+P)

    def rotate_new(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k (N, nh, T, hs) of T new positions start..start+T-1 in the cache, rotated in one
        go: a decoding step turns one query and one key where it used to turn every cached key."""
        cos, sin = self.rotary_cos[start:start + q.shape[2]], self.rotary_sin[start:start + q.shape[2]]  # (T, hs)
        return rotate(torch.cat([q, k], dim=1), cos, sin).split(self.heads, dim=1)  # (N, nh, T, hs) each

    def keep_last(self, cache: KVCache, n: int):
        """cache.keep_last(n), and with cross-patch attention the kept keys turned back by as many
        positions as they moved (they were rotated where they were)."""
        moved = cache.length - n
        cache.keep_last(n)
        if self.cross_patch and n:
            cache.k[:, :, :n] = rotate(cache.k[:, :, :n], self.rotary_cos[moved], -self.rotary_sin[moved])

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, queries: int | None = None) -> torch.Tensor:
        """x (..., T, C) → (..., n, C) for the last n = queries (default T) positions."""
        *lead, T, C = x.shape
        n = queries or T
        q, k, v = self.project(x, n)  # (N, nh, n, hs), (N, nh, T, hs) twice
        mask = None
        if cache is not None:
            if self.cross_patch:  # the new positions come after the cache's, whose keys are rotated already
                q, k = self.rotate_new(q, k, cache.length)
            k, v = cache.update(k, v)  # (N, nh, S, hs)
        elif self.cross_patch:  # x is (B, K, P, C)
            k, v, mask = self.with_previous_patch(k, v, *lead)  # (B·K, nh, r+P, hs) twice, (B·K, 1, P, r+P)
            S = k.shape[2]  # keys at positions 0..r+P-1, queries at the last P
            cos, sin = self.rotary_cos[:S], self.rotary_sin[:S]  # (S, hs) each
            q, k = rotate(q, cos[S - n:], sin[S - n:]), rotate(k, cos, sin)
        S = k.shape[2]
        attend = matmul_attention if self.kernel == "matmul" else F.scaled_dot_product_attention
        dropout_p = self.dropout if self.training else 0.0
        windowed = self.window and S > self.window  # some keys lie beyond a query's window
        if windowed and n == S:  # training, or prefill into an empty cache: in blocks
            y = sliding_window_attention(q, k, v, self.window, attend, dropout_p)  # (N, nh, n, hs)
        else:
            if windowed and n == 1:  # one new query reads only the last W keys
                k, v, S = k[:, :, -self.window:], v[:, :, -self.window:], self.window
            elif windowed:  # a band: query i (key position S-n+i) sees S-n+i-W+1 .. S-n+i
                ones = torch.ones(n, S, dtype=torch.bool, device=x.device)
                mask = ones.tril(diagonal=S - n) & ~ones.tril(diagonal=S - n - self.window)  # (n, S)
            if mask is None and 1 < n < S:  # queries sit at the end of the keys: bottom-right causal mask
                mask = torch.ones(n, S, dtype=torch.bool, device=x.device).tril(diagonal=S - n)
            # is_causal only when queries and keys start together (training, or prefill into an
            # empty cache): that is the case the flash / memory-efficient kernels serve
            is_causal = mask is None and n > 1 and S == n
            y = attend(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p)  # (N, nh, n, hs)
        y = y.transpose(1, 2).reshape(*lead, n, C)  # (..., n, C): heads side by side again
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: MegaByteConfig, dim: int):
        super().__init__()
        hidden = int(config.mlp_ratio * dim)
        self.gated = config.activation == "swiglu"
        # swiglu's gate and value come out of one matmul
        self.fc = nn.Linear(dim, 2 * hidden if self.gated else hidden, bias=config.bias)
        self.act = make_activation(config)
        self.proj = nn.Linear(hidden, dim, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = self.act(h)
        return self.drop(self.proj(h))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: MegaByteConfig, dim: int, heads: int, cross_patch: int = 0, kernel: str = "sdpa",
                 window: int = 0):
        super().__init__()
        self.norm1 = make_norm(config, dim)
        self.attn = CausalSelfAttention(config, dim, heads, cross_patch, kernel, window)
        self.norm2 = make_norm(config, dim)
        self.mlp = MLP(config, dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, queries: int | None = None) -> torch.Tensor:
        """x (..., T, C) → (..., n, C): with `queries`, only the last n positions go on."""
        h = self.attn(self.norm1(x), cache, queries)  # (..., n, C)
        x = x[..., x.shape[-2] - h.shape[-2]:, :] + h  # (..., n, C)
        return x + self.mlp(self.norm2(x))


def init_block(block: Block, config: MegaByteConfig, layers: int):
    for module in block.modules():
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2·layers) so that
    # its variance does not grow with depth
    for proj in (block.attn.proj, block.mlp.proj):
        trunc_normal_(proj.weight, config.init_std / math.sqrt(2 * layers))


class Transformer(nn.Module):
    """A causal decoder stack without embeddings or head: blocks, then a final norm.
    MegaByte's global and local models and the whole baseline are each one of these; the local
    model passes config.local_attention as its attention kernel, the others keep "sdpa".
    SpaceByte's stacks pass a window, and final_norm=False where another stack follows on the
    same residual stream (the norm belongs before the head only)."""

    def __init__(self, config: MegaByteConfig, dim: int, layers: int, heads: int, cross_patch: int = 0,
                 kernel: str = "sdpa", window: int = 0, final_norm: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config, dim, heads, cross_patch, kernel, window) for _ in range(layers))
        self.norm = make_norm(config, dim) if final_norm else nn.Identity()
        self.checkpointing = config.activation_checkpointing
        for block in self.blocks:
            init_block(block, config, layers)

    def forward(self, x: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if caches is not None:
                x = block(x, caches[i])
            elif self.checkpointing and self.training and torch.is_grad_enabled():
                x = self.in_pieces(partial(checkpoint, block, use_reentrant=False), x)
            elif not torch.is_grad_enabled():  # inference: one piece's activations at a time
                x = self.in_pieces(block, x)
            else:
                x = block(x)
        return self.norm(x)

    CHUNK_POSITIONS = 8192  # positions of patches one piece holds (below)

    def in_pieces(self, run, x: torch.Tensor) -> torch.Tensor:
        """run(x), where run is a block or its checkpoint (which keeps only its input for backward
        and computes the block again there). Patches (x (B, K, P, C), the local model) are
        independent but for the previous patch's last r positions, so they go in pieces of about
        CHUNK_POSITIONS positions, each with the patch before it (its output dropped): a block's
        activations, in inference and in backward's recomputation, are then one piece's at a time,
        not all T bytes' (BENCHMARKS.md: 11.3 → 6.0 KB a byte for a training step at T = 196,608).
        Any other x runs whole."""
        if x.dim() != 4:
            return run(x)
        B, K, P, C = x.shape
        k = max(1, self.CHUNK_POSITIONS // (B * P))  # patches a piece
        before = 1 if self.blocks[0].attn.cross_patch else 0  # the previous patch, for cross-patch attention
        pieces = []
        for start in range(0, K, k):
            first = max(0, start - before)
            y = run(x[:, first:start + k])  # (B, k + before, P, C)
            pieces.append(y[:, start - first:])  # (B, ≤k, P, C)
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]  # (B, K, P, C)

    def new_caches(self, max_len: int) -> list[KVCache]:
        return [KVCache(max_len) for _ in self.blocks]

    def keep_last(self, caches: list[KVCache], n: int):
        """Keep each layer's last n cached positions (see CausalSelfAttention.keep_last)."""
        for block, cache in zip(self.blocks, caches):
            block.attn.keep_last(cache, n)


class ConvEncoder(nn.Module):
    """MegaByte's convolutional patch encoder (§2.3): causal 1-D convolutions with kernels 3, 5, 7
    over the byte embeddings (B, T, D) → (B, T, D), before they are cut into patches.

    The paper gives neither channels, activation, norm nor residuals. We keep D channels (the
    patch layout P·D stays as it is), use the config's activation, and add each convolution as a
    residual, x + act(conv(x)): at init (std init_std) the stack is close to the identity, so the
    byte embedding and its position reach the global model unchanged and the encoder learns only
    what helps on top of them. No norm and no dropout: the paper has none on embeddings."""

    KERNELS = (3, 5, 7)

    def __init__(self, config: MegaByteConfig, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, k, bias=config.bias) for k in self.KERNELS)
        self.act = make_activation(config)
        self.reach = sum(k - 1 for k in self.KERNELS)  # 12: how many earlier bytes an output sees
        for conv in self.convs:
            trunc_normal_(conv.weight, config.init_std)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 0:  # a prompt without a complete patch: nothing to convolve
            return x
        x = x.transpose(1, 2)  # (B, D, T): channels first for Conv1d
        for conv in self.convs:
            # left padding k-1: the output at t sees inputs t-k+1..t only (zeros before byte 0)
            x = x + self.act(conv(F.pad(x, (conv.kernel_size[0] - 1, 0))))  # (B, D, T)
        return x.transpose(1, 2)  # (B, T, D)
