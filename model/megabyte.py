"""MegaByte (Yu et al. 2023, arXiv 2305.07185, §2): patch embedder → global model → local model.

Shapes: B batch, T bytes, P bytes per patch, K = T/P patches, D_G global width per byte (the
global model is P·D_G wide), D_L local width, V vocabulary, r cross-patch positions.

    ids (B, T) ─ byte embed + position (─ conv encoder) ─▶ (B, T, D_G) ─ concat P bytes ─▶ (B, K, P·D_G)
    prepend the global pad patch, drop the last patch (patch k sees only patches < k)
    ─ global transformer ─▶ (B, K, P·D_G) ─ split into P slices, D_G → D_L ─▶ (B, K, P, D_L)
    + local embedding of the previous byte in the patch (a local pad at p = 0)
    ─ local transformer over the P bytes of every patch at once, (B, K, P, D_L) ─▶ logits (B, T, V)

logits[:, t] predicts ids[:, t] from ids[:, :t]: the shift happens inside, as in the paper.
Options (§2.3): conv_encoder (causal convolutions over the byte embeddings) and local_cross_patch
(every local attention layer also sees the last r positions of the previous patch).
The ablations in model/ablations.py replace one half: build_global/patch_contexts or build_local.
"""

import torch
import torch.nn as nn

from model.config import MegaByteConfig
from model.cuda_graphs import LocalStepGraphs
from model.layers import ConvEncoder, Transformer, trunc_normal_
from model.loss import ByteHead


class MegaByte(nn.Module):
    decodes_with_cuda_graphs = True  # prefill(..., cuda_graphs=True): the local step as CUDA graphs

    def __init__(self, config: MegaByteConfig):
        super().__init__()
        self.config = config
        self.build_global(config)
        self.build_local(config)
        if config.architecture == "megabyte":  # each ablation has one half only: nothing to hand over
            self.global_to_local = nn.Linear(config.global_byte_dim, config.local_dim, bias=config.bias)  # w_GL
            trunc_normal_(self.global_to_local.weight, config.init_std)
            if self.global_to_local.bias is not None:
                nn.init.zeros_(self.global_to_local.bias)

    def build_global(self, config: MegaByteConfig):
        """Patch embedder (E_global-embed V × D_G, E_pos T × D_G, the optional conv encoder, a
        trainable pad patch P·D_G) and global model."""
        P, D_G = config.patch_size, config.global_byte_dim
        self.global_embed = nn.Embedding(config.vocab_size, D_G)
        self.pos_embed = nn.Embedding(config.seq_len, D_G) if config.pos_embedding == "learned" else None
        self.conv = ConvEncoder(config, D_G) if config.conv_encoder else None
        self.global_pad = nn.Parameter(torch.empty(P * D_G))
        self.global_model = Transformer(config, config.global_dim, config.global_layers, config.global_heads)
        for tensor in (self.global_embed.weight, self.global_pad):
            trunc_normal_(tensor, config.init_std)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed.weight, config.init_std)

    def build_local(self, config: MegaByteConfig):
        """E_local-embed (V × D_L), the trainable local pad before the first byte, local model, head.
        No local position embedding: slot p already gets its own slice of the global output (with
        cross-patch attention, rotary positions tell the previous patch's keys from this one's)."""
        D_L = config.local_dim
        self.local_embed = nn.Embedding(config.vocab_size, D_L)
        self.local_pad = nn.Parameter(torch.empty(D_L))
        self.local_model = Transformer(config, D_L, config.local_layers, config.local_heads, config.local_cross_patch,
                                       config.local_attention)
        self.head = ByteHead(D_L, config.vocab_size)
        for tensor in (self.local_embed.weight, self.local_pad, self.head.weight):
            trunc_normal_(tensor, config.init_std)
        if config.tie_embeddings:
            self.head.weight = self.local_embed.weight  # the paper's softmax(E_local-embed · h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    # ---- the global half ----

    def embed_bytes(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, n) whose first byte sits at position `start` → (B, n, D_G). With the conv
        encoder, outputs are exact from the conv's reach on (or all of them when start is 0)."""
        x = self.global_embed(ids)  # (B, n, D_G)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + ids.shape[1], device=ids.device))
        return x if self.conv is None else self.conv(x)

    def embed_patches(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, n·P) from position 0 → patch embeddings (B, n, P·D_G)."""
        B, L = ids.shape
        P = self.config.patch_size
        x = self.embed_bytes(ids)  # (B, n·P, D_G)
        return x.view(B, L // P, P * x.shape[-1])  # (B, n, P·D_G): P bytes side by side

    def global_forward(self, ids: torch.Tensor, caches=None) -> torch.Tensor:
        """ids (B, n·P) → global output (B, n+1, P·D_G); position k sees patches < k (the pad first).
        Training drops the last output (no byte follows the last patch); prefill needs it."""
        pad = self.global_pad.expand(ids.shape[0], 1, -1)  # (B, 1, P·D_G)
        return self.global_model(torch.cat([pad, self.embed_patches(ids)], dim=1), caches)  # (B, n+1, P·D_G)

    def global_step(self, state: dict) -> torch.Tensor:
        """The patch that just completed (its last byte at state["length"] - 1) through the global
        model's caches → the global output for the next patch (B, P·D_G)."""
        P, end = self.config.patch_size, state["length"]
        # the conv encoder reads `reach` bytes before the patch (none before position 0)
        first = max(0, end - P - (self.conv.reach if self.conv is not None else 0))
        x = self.embed_bytes(state["ids"][:, first:end], first)[:, -P:]  # (B, P, D_G)
        return self.global_model(x.reshape(x.shape[0], 1, -1), state["global_caches"])[:, 0]  # (B, P·D_G)

    def to_local_context(self, h: torch.Tensor) -> torch.Tensor:
        """Global output (..., P·D_G) → one D_L context vector per byte slot (..., P, D_L), by w_GL."""
        P = self.config.patch_size
        h = h.unflatten(-1, (P, h.shape[-1] // P))  # (..., P, D_G): the P slices
        return self.global_to_local(h)  # (..., P, D_L)

    # what the local model gets for each patch; the "w/o global model" ablation overrides these

    def patch_contexts(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, K·P) → the context of every patch's P slots (B, K, P, D_L)."""
        return self.to_local_context(self.global_forward(ids[:, : -self.config.patch_size]))

    def prefill_contexts(self, ids: torch.Tensor, state: dict) -> torch.Tensor:
        """ids (B, n·P), the complete patches of a prompt → contexts of patches 0..n (B, n+1, P, D_L)."""
        state["global_caches"] = self.global_model.new_caches(-(-state["ids"].shape[1] // self.config.patch_size))
        return self.to_local_context(self.global_forward(ids, state["global_caches"]))

    def step_context(self, state: dict) -> torch.Tensor:
        """After a patch completes: the next patch's context (B, P, D_L)."""
        return self.to_local_context(self.global_step(state))

    # ---- the local half ----

    def local_inputs(self, context: torch.Tensor, prev_bytes: torch.Tensor) -> torch.Tensor:
        """context (..., P, D_L); prev_bytes (..., n) with n < P, the bytes of this patch before
        slots 1..n → local model inputs for slots 0..n, (..., n+1, D_L)."""
        pad = self.local_pad.expand(*prev_bytes.shape[:-1], 1, -1)  # (..., 1, D_L)
        prev = torch.cat([pad, self.local_embed(prev_bytes)], dim=-2)  # (..., n+1, D_L)
        return context[..., : prev.shape[-2], :] + prev

    def pad_to_patches(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T') with 0 < T' ≤ T → (B, K·P): a T' that is not a multiple of P is padded with
        PAD up to one (causality makes the logits before it exact; the caller cuts them back)."""
        T = ids.shape[1]
        if not 0 < T <= self.config.seq_len:
            raise ValueError(f"sequence of {T} bytes: the model reads 1 to seq_len={self.config.seq_len} bytes")
        return nn.functional.pad(ids, (0, -ids.shape[1] % self.config.patch_size), value=self.config.pad_id)

    def forward(self, ids: torch.Tensor, loss: bool = False):
        """ids (B, T') with T' ≤ T → logits (B, T', V); with loss, (mean nats, targets) instead
        (the head's fused loss: the logits are never held whole)."""
        B, T = ids.shape
        padded = self.pad_to_patches(ids)  # (B, K·P)
        P, D_L, K = self.config.patch_size, self.config.local_dim, padded.shape[1] // self.config.patch_size
        context = self.patch_contexts(padded)  # (B, K, P, D_L)
        assert context.shape == (B, K, P, D_L), f"global→local handover: {tuple(context.shape)} != {(B, K, P, D_L)}"
        x = self.local_inputs(context, padded.view(B, K, P)[..., :-1])  # (B, K, P, D_L); bytes before slots 1..P-1
        x = self.local_model(x)  # (B, K, P, D_L): every patch at once (and its predecessor's last r)
        x = x.view(B, K * P, D_L)[:, :T]  # (B, T, D_L)
        return self.head(x, ids) if loss else self.head(x)  # (B, T, V)

    # ---- cached decoding: one global step per completed patch, one local step per byte ----

    def new_state(self, ids: torch.Tensor, max_len: int) -> dict:
        """Decoding state for a prompt ids (B, L) that will grow to max_len bytes."""
        if max_len > self.config.seq_len:
            raise ValueError(f"prompt + new bytes = {max_len} > the model's seq_len={self.config.seq_len}")
        B, L = ids.shape
        state = {"ids": ids.new_empty(B, max_len), "length": L}  # every byte read so far
        state["ids"][:, :L] = ids
        return state

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int, cuda_graphs: bool = False) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L), L ≥ 0, and make room to continue it up to max_len bytes in
        all. Returns the logits for byte L (B, V) and the decoding state for decode_step.
        cuda_graphs: decode_step runs the local model and head through CUDA graphs (model/cuda_graphs.py)."""
        P, r = self.config.patch_size, self.config.local_cross_patch
        state = self.new_state(ids, max_len)
        done = ids.shape[1] // P  # complete patches; the rest is the current one
        contexts = self.prefill_contexts(ids[:, : done * P], state)  # (B, done+1, P, D_L)
        state["local_caches"] = self.local_model.new_caches(r + P)
        if r:  # cross-patch attention: the last complete patch's keys/values at every local layer
            self.prefill_previous_patches(contexts, ids, state)
        state["context"] = contexts[:, -1]  # (B, P, D_L) for the current patch
        x = self.local_inputs(state["context"], ids[:, done * P:])  # (B, L-done·P+1, D_L)
        x = self.local_model(x, state["local_caches"])  # (B, L-done·P+1, D_L)
        if cuda_graphs:
            state["local_graphs"] = LocalStepGraphs(lambda x: self.local_step(x, state["local_caches"]),
                                                    state["local_caches"])
        return self.head(x[:, -1]), state  # (B, V)

    def prefill_previous_patches(self, contexts: torch.Tensor, ids: torch.Tensor, state: dict):
        """Leave in the local caches the last r keys/values of the last complete patch, at every
        layer. Layer l of a patch depends on the l patches before it (one per layer below), so
        running the last local_layers complete patches in order, from empty caches, is exact."""
        P, done = self.config.patch_size, contexts.shape[1] - 1
        for k in range(max(0, done - self.config.local_layers), done):
            x = self.local_inputs(contexts[:, k], ids[:, k * P: (k + 1) * P - 1])  # (B, P, D_L)
            self.local_model(x, state["local_caches"])
            self.local_model.keep_last(state["local_caches"], self.config.local_cross_patch)

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,), and return the logits for the byte after it (B, V)."""
        P = self.config.patch_size
        p = state["length"] % P  # slot of next_ids in its patch
        state["ids"][:, state["length"]] = next_ids
        state["length"] += 1
        if p == P - 1:  # the patch is complete: the next patch's context (a global step)
            state["context"] = self.step_context(state)  # (B, P, D_L)
            self.local_model.keep_last(state["local_caches"], self.config.local_cross_patch)  # 0: empty
            x = state["context"][:, 0] + self.local_pad  # (B, D_L): slot 0 sees the local pad
        else:
            x = state["context"][:, p + 1] + self.local_embed(next_ids)  # (B, D_L)
        x = x.unsqueeze(1)  # (B, 1, D_L)
        if "local_graphs" in state:
            return state["local_graphs"](x)  # (B, V)
        return self.local_step(x, state["local_caches"])  # (B, V)

    def out_of_global_positions(self, state: dict) -> bool:
        return False  # every patch has its global step (SpaceByte's boundaries may run out)

    def local_step(self, x: torch.Tensor, caches) -> torch.Tensor:
        """One position, x (B, 1, D_L), through the local model with its caches and the head → (B, V)."""
        return self.head(self.local_model(x, caches)[:, 0])
