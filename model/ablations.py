"""MegaByte's component ablations (paper Table 10), each MegaByte with one half replaced.

Shapes: B batch, T bytes, P bytes per patch, K = T/P patches, D_G global width per byte, D_L local
width, V vocabulary.

"w/o local model" (NoLocal): the global model alone. Its output for patch k, which has seen only
    patches < k, goes through P output heads (one Linear to P·V) that predict the P bytes of patch
    k at once, independently of each other.
        ids (B, T) ─ MegaByte's patch embedder and global model ─▶ (B, K, P·D_G) ─ P heads ─▶ (B, T, V)
"w/o global model" (NoGlobal): the local model alone, over patches of P bytes that see nothing of
    each other: slot p gets a learned slot embedding where MegaByte puts its global context, so
    the first byte of every patch is predicted from the local pad and slot 0's embedding only.
        ids (B, T) ─ (B, K, P) ─ slot embedding + previous byte ─ local model ─▶ (B, T, V)
The paper does not describe how either emits bytes; these are the plainest readings of its text.
"""

import torch
import torch.nn as nn

from model.config import MegaByteConfig
from model.layers import trunc_normal_
from model.loss import byte_loss
from model.megabyte import MegaByte


class NoLocal(MegaByte):
    decodes_with_cuda_graphs = False  # no local model to capture

    def build_local(self, config: MegaByteConfig):
        # P heads of global_dim → V each, in one matrix; they read the whole global output, so
        # there is no byte table of their width to tie them to
        self.head = nn.Linear(config.global_dim, config.patch_size * config.vocab_size, bias=False)
        trunc_normal_(self.head.weight, config.init_std)

    def patch_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Global output (..., P·D_G) → logits for the P bytes of its patch (..., P, V)."""
        return self.head(h).unflatten(-1, (self.config.patch_size, -1))  # (..., P, V)

    def forward(self, ids: torch.Tensor, loss: bool = False):
        """ids (B, T') with T' ≤ T → logits (B, T', V); with loss, (mean nats, targets) from them
        (P heads of the whole patch output: no byte head to fuse the loss with)."""
        B, T = ids.shape
        padded = self.pad_to_patches(ids)  # (B, K·P)
        h = self.global_forward(padded[:, : -self.config.patch_size])  # (B, K, P·D_G)
        logits = self.patch_logits(h).flatten(1, 2)[:, :T]  # (B, K, P, V) → (B, T, V)
        return (byte_loss(logits, ids), (ids != self.config.pad_id).sum()) if loss else logits

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L); room for max_len bytes in all. Returns logits for byte L (B, V)."""
        P = self.config.patch_size
        state = self.new_state(ids, max_len)
        done = ids.shape[1] // P
        state["global_caches"] = self.global_model.new_caches(-(-max_len // P))
        h = self.global_forward(ids[:, : done * P], state["global_caches"])  # (B, done+1, P·D_G)
        state["logits"] = self.patch_logits(h[:, -1])  # (B, P, V): the whole current patch
        return state["logits"][:, ids.shape[1] % P], state

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,); return the logits for the byte after it (B, V)."""
        state["ids"][:, state["length"]] = next_ids
        state["length"] += 1
        p = state["length"] % self.config.patch_size  # slot of the byte to predict
        if p == 0:  # a patch completed: one global step gives all P heads of the next one
            state["logits"] = self.patch_logits(self.global_step(state))  # (B, P, V)
        return state["logits"][:, p]


class NoGlobal(MegaByte):
    def build_global(self, config: MegaByteConfig):
        # the slot embedding stands where MegaByte adds the global context (it is the only
        # position the local model gets, so pos_embedding="none" leaves it out)
        self.slot_embed = None
        if config.pos_embedding == "learned":
            self.slot_embed = nn.Parameter(torch.empty(config.patch_size, config.local_dim))
            trunc_normal_(self.slot_embed, config.init_std)

    def contexts(self, B: int, n: int) -> torch.Tensor:
        """The same context for every patch: (B, n, P, D_L)."""
        P, D_L = self.config.patch_size, self.config.local_dim
        if self.slot_embed is None:
            return self.local_pad.new_zeros(B, n, P, D_L)
        return self.slot_embed.expand(B, n, P, D_L)  # (P, D_L) → (B, n, P, D_L), no copy

    def patch_contexts(self, ids: torch.Tensor) -> torch.Tensor:
        return self.contexts(ids.shape[0], ids.shape[1] // self.config.patch_size)  # (B, K, P, D_L)

    def prefill_contexts(self, ids: torch.Tensor, state: dict) -> torch.Tensor:
        return self.contexts(ids.shape[0], ids.shape[1] // self.config.patch_size + 1)  # (B, n+1, P, D_L)

    def step_context(self, state: dict) -> torch.Tensor:
        return self.contexts(state["ids"].shape[0], 1)[:, 0]  # (B, P, D_L)
