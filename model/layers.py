"""The transformer pieces both models are built from: attention, MLP, pre-norm block, causal stack,
a KV cache for generation, and the byte loss.

Shapes: B batch (for the local model: batch × patches), T positions in this call, S positions in
the KV cache including this call, C width, nh heads, hs = C/nh head size, V vocabulary.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from model.config import MegaByteConfig


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    # cut at ±2 std so that no weight starts far out in the tail
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def make_norm(config: MegaByteConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    return nn.LayerNorm(dim, bias=config.bias)


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

    def reset(self):
        self.length = 0  # keep the buffers: the local model reuses its caches for every patch


class CausalSelfAttention(nn.Module):
    def __init__(self, config: MegaByteConfig, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.bias)
        self.proj = nn.Linear(dim, dim, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        mask = None
        if cache is not None:
            k, v = cache.update(k, v)  # (B, nh, S, hs)
            S = k.shape[2]
            if 1 < T < S:  # new queries sit at the end of the keys: bottom-right causal mask
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        # is_causal only when queries and keys start together (training, or prefill into an empty
        # cache): that is the case the flash / memory-efficient kernels serve
        is_causal = mask is None and T > 1 and k.shape[2] == T
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: MegaByteConfig, dim: int):
        super().__init__()
        hidden = int(config.mlp_ratio * dim)
        self.gated = config.activation == "swiglu"
        # swiglu's gate and value come out of one matmul
        self.fc = nn.Linear(dim, 2 * hidden if self.gated else hidden, bias=config.bias)
        self.act = nn.ReLU() if config.activation == "relu" else nn.GELU()
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

    def __init__(self, config: MegaByteConfig, dim: int, heads: int):
        super().__init__()
        self.norm1 = make_norm(config, dim)
        self.attn = CausalSelfAttention(config, dim, heads)
        self.norm2 = make_norm(config, dim)
        self.mlp = MLP(config, dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A causal decoder stack without embeddings or head: blocks, then a final norm.
    MegaByte's global and local models and the whole baseline are each one of these."""

    def __init__(self, config: MegaByteConfig, dim: int, layers: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config, dim, heads) for _ in range(layers))
        self.norm = make_norm(config, dim)
        self.checkpointing = config.activation_checkpointing
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2·layers)
            # so that its variance does not grow with depth
            for proj in (block.attn.proj, block.mlp.proj):
                trunc_normal_(proj.weight, config.init_std / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if caches is not None:
                x = block(x, caches[i])
            elif self.checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)  # keep only the block's input
            else:
                x = block(x)
        return self.norm(x)

    def new_caches(self, max_len: int) -> list[KVCache]:
        return [KVCache(max_len) for _ in self.blocks]


def byte_loss(logits: torch.Tensor, ids: torch.Tensor, pad_id: int = 256) -> torch.Tensor:
    """Mean cross-entropy in nats over the predicted positions whose target is not PAD.

    logits (B, L, V) from model(ids), ids (B, T): logits[:, j] already predicts ids[:, T - L + j]
    (the models shift internally, so no shift here). L = T for every model but PerceiverAR, which
    predicts only its last L = latents bytes. Every byte value, 0 included, is a target; divide by
    ln 2 for bits per byte. A batch of nothing but PAD gives NaN (0/0)."""
    targets = ids[:, ids.shape[1] - logits.shape[1]:]  # (B, L): the bytes the logits predict
    # (B·L, V) against (B·L,); fp32 so that a bf16 forward still gets an exact softmax
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def bits_per_byte(loss_nats: torch.Tensor | float) -> torch.Tensor | float:
    return loss_nats / math.log(2)
