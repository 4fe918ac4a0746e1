"""The paper's baseline: a vanilla causal decoder over bytes, built from the same blocks as MegaByte
and called the same way (model(ids) → logits, byte_loss, generate).

Shapes: B batch, T bytes, D width (config.global_dim), V vocabulary.

Input position t holds byte t-1 (a trainable start vector at t = 0), so logits[:, t] predicts
ids[:, t] from ids[:, :t] exactly as MegaByte's do, and the first byte is predicted too.
"""

import torch
import torch.nn as nn

from model.config import UNPATCHED, MegaByteConfig
from model.layers import Transformer, trunc_normal_
from model.loss import ByteHead


class ByteTransformer(nn.Module):
    decodes_with_cuda_graphs = False  # its caches grow with every byte: no shape repeats to capture

    def __init__(self, config: MegaByteConfig):
        super().__init__()
        assert config.architecture in UNPATCHED, "build_model picks the class for a config"
        self.config = config
        D = config.global_dim
        self.embed = nn.Embedding(config.vocab_size, D)
        self.pos_embed = nn.Embedding(config.seq_len, D) if config.pos_embedding == "learned" else None
        self.start = nn.Parameter(torch.empty(D))  # stands before the first byte, like MegaByte's pads
        self.transformer = Transformer(config, D, config.global_layers, config.global_heads)
        self.head = ByteHead(D, config.vocab_size)
        for tensor in (self.embed.weight, self.start, self.head.weight):
            trunc_normal_(tensor, config.init_std)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed.weight, config.init_std)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def add_positions(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x (B, n, D) at input positions start..start+n-1."""
        if self.pos_embed is None:
            return x
        return x + self.pos_embed(torch.arange(start, start + x.shape[1], device=x.device))

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, n) → inputs for positions 0..n (B, n+1, D): the start vector, then the bytes."""
        start = self.start.expand(ids.shape[0], 1, -1)  # (B, 1, D)
        return self.add_positions(torch.cat([start, self.embed(ids)], dim=1), 0)

    def forward(self, ids: torch.Tensor, loss: bool = False):
        """ids (B, T') with T' ≤ T → logits (B, T', V); with loss, (mean nats, targets) instead."""
        B, T = ids.shape
        if T > self.config.seq_len:
            raise ValueError(f"sequence of {T} bytes is longer than the model's seq_len={self.config.seq_len}")
        x = self.inputs(ids[:, : max(T - 1, 0)])  # (B, T, D): the last byte predicts nothing here
        x = self.transformer(x)[:, :T]  # (B, T, D)
        return self.head(x, ids) if loss else self.head(x)  # (B, T, V)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L); room for max_len bytes in all. Returns logits for byte L (B, V)."""
        if max_len > self.config.seq_len:
            raise ValueError(f"prompt + new bytes = {max_len} > the model's seq_len={self.config.seq_len}")
        state = {"caches": self.transformer.new_caches(max_len), "length": ids.shape[1]}
        x = self.transformer(self.inputs(ids), state["caches"])  # (B, L+1, D)
        return self.head(x[:, -1]), state  # (B, V)

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,); return the logits for the byte after it (B, V)."""
        state["length"] += 1  # next_ids is byte length-1, read at input position length
        x = self.add_positions(self.embed(next_ids).unsqueeze(1), state["length"])  # (B, 1, D)
        x = self.transformer(x, state["caches"])  # (B, 1, D)
        return self.head(x[:, 0])  # (B, V)

    def out_of_global_positions(self, state: dict) -> bool:
        return False  # every byte is a position of the one stack (SpaceByte's boundaries may run out)
