"""MegaByte (Yu et al. 2023, arXiv 2305.07185, §2): patch embedder → global model → local model.

Shapes: B batch, T bytes, P bytes per patch, K = T/P patches, D_G global width per byte (the
global model is P·D_G wide), D_L local width, V vocabulary.

    ids (B, T) ─ byte embed + position ─▶ (B, T, D_G) ─ concat P bytes ─▶ (B, K, P·D_G)
    prepend the global pad patch, drop the last patch (patch k sees only patches < k)
    ─ global transformer ─▶ (B, K, P·D_G) ─ split into P slices, D_G → D_L ─▶ (B, K, P, D_L)
    + local embedding of the previous byte in the patch (a local pad at p = 0)
    ─ local transformer over the P bytes of every patch at once, (B·K, P, D_L) ─▶ logits (B, T, V)

logits[:, t] predicts ids[:, t] from ids[:, :t]: the shift happens inside, as in the paper.
"""

import torch
import torch.nn as nn

from model.config import MegaByteConfig
from model.layers import Transformer, trunc_normal_


class MegaByte(nn.Module):
    def __init__(self, config: MegaByteConfig):
        super().__init__()
        assert config.architecture == "megabyte", "use ByteTransformer for architecture='transformer'"
        self.config = config
        P, D_G, D_L = config.patch_size, config.global_byte_dim, config.local_dim
        # patch embedder: E_global-embed (V × D_G), E_pos (T × D_G), trainable pad patch (P·D_G)
        self.global_embed = nn.Embedding(config.vocab_size, D_G)
        self.pos_embed = nn.Embedding(config.seq_len, D_G) if config.pos_embedding == "learned" else None
        self.global_pad = nn.Parameter(torch.empty(P * D_G))
        self.global_model = Transformer(config, config.global_dim, config.global_layers, config.global_heads)
        # global → local: w_GL (D_G → D_L), shared by the P slices
        self.global_to_local = nn.Linear(D_G, D_L, bias=config.bias)
        # E_local-embed (V × D_L) and the trainable local pad that stands before the first byte.
        # No local position embedding: slot p already gets its own slice of the global output.
        self.local_embed = nn.Embedding(config.vocab_size, D_L)
        self.local_pad = nn.Parameter(torch.empty(D_L))
        self.local_model = Transformer(config, D_L, config.local_layers, config.local_heads)
        self.head = nn.Linear(D_L, config.vocab_size, bias=False)
        for tensor in (self.global_embed.weight, self.global_pad, self.global_to_local.weight,
                       self.local_embed.weight, self.local_pad, self.head.weight):
            trunc_normal_(tensor, config.init_std)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed.weight, config.init_std)
        if self.global_to_local.bias is not None:
            nn.init.zeros_(self.global_to_local.bias)
        if config.tie_embeddings:
            self.head.weight = self.local_embed.weight  # the paper's softmax(E_local-embed · h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def embed_patches(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, n·P) whose first byte sits at position `start` → patch embeddings (B, n, P·D_G)."""
        B, L = ids.shape
        x = self.global_embed(ids)  # (B, n·P, D_G)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + L, device=ids.device))
        P = self.config.patch_size
        return x.view(B, L // P, P * x.shape[-1])  # (B, n, P·D_G): P bytes side by side

    def to_local_context(self, h: torch.Tensor) -> torch.Tensor:
        """Global output (..., P·D_G) → one D_L context vector per byte slot (..., P, D_L)."""
        P = self.config.patch_size
        h = h.unflatten(-1, (P, h.shape[-1] // P))  # (..., P, D_G): the P slices
        return self.global_to_local(h)  # (..., P, D_L)

    def local_inputs(self, context: torch.Tensor, prev_bytes: torch.Tensor) -> torch.Tensor:
        """context (..., P, D_L); prev_bytes (..., n) with n < P, the bytes of this patch before
        slots 1..n → local model inputs for slots 0..n, (..., n+1, D_L)."""
        pad = self.local_pad.expand(*prev_bytes.shape[:-1], 1, -1)  # (..., 1, D_L)
        prev = torch.cat([pad, self.local_embed(prev_bytes)], dim=-2)  # (..., n+1, D_L)
        return context[..., : prev.shape[-2], :] + prev

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T') with T' ≤ T → logits (B, T', V). A T' that is not a multiple of P is padded
        with PAD up to one internally and the logits are cut back (causality makes that exact)."""
        B, T = ids.shape
        P, D_L = self.config.patch_size, self.config.local_dim
        if not 0 < T <= self.config.seq_len:
            raise ValueError(f"sequence of {T} bytes: the model reads 1 to seq_len={self.config.seq_len} bytes")
        ids = nn.functional.pad(ids, (0, -T % P), value=self.config.pad_id)  # (B, K·P)
        K = ids.shape[1] // P

        patches = self.embed_patches(ids)  # (B, K, P·D_G)
        pad = self.global_pad.expand(B, 1, -1)  # (B, 1, P·D_G)
        h = self.global_model(torch.cat([pad, patches[:, :-1]], dim=1))  # (B, K, P·D_G)

        context = self.to_local_context(h)  # (B, K, P, D_L)
        prev_bytes = ids.reshape(B, K, P)[..., :-1]  # (B, K, P-1): the bytes before slots 1..P-1
        x = self.local_inputs(context, prev_bytes)  # (B, K, P, D_L)
        assert x.shape == (B, K, P, D_L), f"global→local handover: {tuple(x.shape)} != {(B, K, P, D_L)}"
        x = self.local_model(x.view(B * K, P, D_L))  # (B·K, P, D_L): all patches in one batch
        logits = self.head(x)  # (B·K, P, V)
        return logits.view(B, K * P, -1)[:, :T]  # (B, T, V)

    # ---- cached decoding: one global step per completed patch, one local step per byte ----

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L), L ≥ 0, and make room to continue it up to max_len bytes in
        all. Returns the logits for byte L (B, V) and the decoding state for decode_step."""
        B, L = ids.shape
        P = self.config.patch_size
        if max_len > self.config.seq_len:
            raise ValueError(f"prompt + new bytes = {max_len} > the model's seq_len={self.config.seq_len}")
        done, r = divmod(L, P)  # complete patches, bytes into the current one
        state = {
            "global_caches": self.global_model.new_caches(-(-max_len // P)),
            "local_caches": self.local_model.new_caches(P),
            "patch": ids.new_empty(B, P),  # the bytes of the current patch, for its global step
            "length": L,
        }
        patches = self.embed_patches(ids[:, : done * P])  # (B, done, P·D_G)
        pad = self.global_pad.expand(B, 1, -1)  # (B, 1, P·D_G)
        h = self.global_model(torch.cat([pad, patches], dim=1), state["global_caches"])  # (B, done+1, P·D_G)
        state["context"] = self.to_local_context(h[:, -1])  # (B, P, D_L) for the current patch
        state["patch"][:, :r] = ids[:, done * P:]
        x = self.local_inputs(state["context"], ids[:, done * P:])  # (B, r+1, D_L)
        x = self.local_model(x, state["local_caches"])  # (B, r+1, D_L)
        return self.head(x[:, -1]), state  # (B, V)

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,), and return the logits for the byte after it (B, V)."""
        P = self.config.patch_size
        p = state["length"] % P  # slot of next_ids in its patch
        state["patch"][:, p] = next_ids
        state["length"] += 1
        if p == P - 1:  # the patch is complete: one global step gives the next patch's context
            start = state["length"] - P
            patch = self.embed_patches(state["patch"], start)  # (B, 1, P·D_G)
            h = self.global_model(patch, state["global_caches"])  # (B, 1, P·D_G)
            state["context"] = self.to_local_context(h[:, 0])  # (B, P, D_L)
            for cache in state["local_caches"]:
                cache.reset()
            x = state["context"][:, 0] + self.local_pad  # (B, D_L): slot 0 sees the local pad
        else:
            x = state["context"][:, p + 1] + self.local_embed(next_ids)  # (B, D_L)
        x = self.local_model(x.unsqueeze(1), state["local_caches"])  # (B, 1, D_L)
        return self.head(x[:, 0])  # (B, V)
