"""PerceiverAR (Hawthorne et al. 2022), the paper's second baseline, from the same blocks.

Shapes: B batch, T bytes, N latents (config.latents), n = min(N, T) latents in this call, S input
positions in the cross-attention's cache, D width (config.global_dim), V vocabulary.

    ids (B, T) ─ start vector + byte embeddings + positions, as the byte transformer ─▶ (B, T, D)
    ─ one causal cross-attention block: queries from the last n positions (the latents), keys and
      values from all T; latent j at position T-n+j sees positions ≤ T-n+j ─▶ (B, n, D)
    ─ causal decoder over the n latents (global_layers, global_heads) ─▶ logits (B, n, V)

logits[:, j] predicts ids[:, T-n+j] from ids[:, :T-n+j]: only the latents are predicted (and
scored: byte_loss takes the last n targets). The paper's own implementation, as here, is a
standard decoder plus one extra cross-attention layer (PAPER §7), so global_layers counts the
decoder's layers and the cross-attention block comes on top.
"""

import torch

from model.baseline import ByteTransformer
from model.config import MegaByteConfig
from model.layers import Block, KVCache, init_block


class PerceiverAR(ByteTransformer):
    def __init__(self, config: MegaByteConfig):
        super().__init__(config)  # embeddings, positions, start vector, decoder (self.transformer), head
        self.cross = Block(config, config.global_dim, config.global_heads)  # the latents' cross-attention
        init_block(self.cross, config, config.global_layers + 1)

    def forward(self, ids: torch.Tensor, loss: bool = False):
        """ids (B, T') with T' ≤ T → logits (B, n, V) for the last n = min(latents, T') bytes; with
        loss, (mean nats, targets) over those n instead."""
        B, T = ids.shape
        if not 0 < T <= self.config.seq_len:
            raise ValueError(f"sequence of {T} bytes: the model reads 1 to seq_len={self.config.seq_len} bytes")
        n = min(self.config.latents, T)
        x = self.inputs(ids[:, : T - 1])  # (B, T, D): the last byte predicts nothing here
        x = self.transformer(self.cross(x, queries=n))  # (B, n, D)
        return self.head(x, ids[:, T - n:]) if loss else self.head(x)  # (B, n, V)

    # ---- cached decoding ----
    # The cross-attention's keys and values, and its output at every position, depend on earlier
    # bytes only: they are cached. The decoder is cached while every position is a latent; once
    # there are more than N positions the window of latents slides by one per byte, which changes
    # what every latent sees, so the decoder runs again over the last N latents (exact, at the
    # cost of a forward over N latents per byte).

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L); room for max_len bytes in all. Returns logits for byte L (B, V)."""
        if max_len > self.config.seq_len:
            raise ValueError(f"prompt + new bytes = {max_len} > the model's seq_len={self.config.seq_len}")
        B, L = ids.shape
        state = {"cross_cache": KVCache(max_len), "caches": self.transformer.new_caches(self.config.latents),
                 "latents": None, "length": L}
        x = self.inputs(ids)  # (B, L+1, D): input positions 0..L
        n = min(self.config.latents, L + 1)
        latents = self.cross(x, state["cross_cache"], queries=n)  # (B, n, D)
        state["latents"] = latents.new_empty(B, max_len, latents.shape[-1])  # the decoder's input at every position
        state["latents"][:, L + 1 - n: L + 1] = latents
        return self.decode_latents(state, n), state

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,); return the logits for the byte after it (B, V)."""
        state["length"] += 1  # next_ids is byte length-1, read at input position length
        x = self.add_positions(self.embed(next_ids).unsqueeze(1), state["length"])  # (B, 1, D)
        state["latents"][:, state["length"]] = self.cross(x, state["cross_cache"])[:, 0]  # (B, D)
        return self.decode_latents(state, 1)

    def decode_latents(self, state: dict, new: int) -> torch.Tensor:
        """The decoder over the latents after `new` more positions → logits for the next byte (B, V)."""
        end, N = state["length"] + 1, self.config.latents  # input positions 0..end-1
        if end <= N:  # every position is a latent: the decoder's caches are exact
            x = self.transformer(state["latents"][:, end - new: end], state["caches"])  # (B, new, D)
        else:
            x = self.transformer(state["latents"][:, end - N: end])  # (B, N, D)
        return self.head(x[:, -1])  # (B, V)
