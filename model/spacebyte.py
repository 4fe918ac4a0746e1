"""SpaceByte (Slagle 2024, arXiv 2404.14408): byte-level local blocks over every byte, and global
blocks only where a patch starts, which for text means after every word.

Shapes: B batch, T bytes (input positions), D_L local width, D_G global width (D_G ≥ D_L),
T_G global positions per sequence, G = min(T_G, T) in this call, W local window, V vocabulary.

    ids (B, T) ─ start vector, then bytes 0..T-2; byte embedding + learned position ─▶ (B, T, D_L)
    ─ first local blocks (local_layers // 2, sliding window of W bytes) ─▶ (B, T, D_L)
    ─ gather each row's first T_G boundary positions, zero-pad D_L → D_G, + global position ─▶ (B, G, D_G)
    ─ global blocks (causal over the boundaries) ─▶ (B, G, D_G); its last D_L dimensions are added
      back at the positions they came from ─▶ (B, T, D_L)
    ─ last local blocks (the other local_layers - local_layers // 2, window W) ─ tied head ─▶ (B, T, V)

logits[:, t] predicts ids[:, t] from ids[:, :t]: input position t reads byte t-1 (the start vector
at t = 0), as the byte transformer's (model/baseline.py).

Boundaries, as the reference code (github kjslag/spacebyte, patch_method="utf8"): a byte is
spacelike unless it is an ASCII letter or digit or a UTF-8 continuation byte (0b10xxxxxx); PAD and
the document boundary id are spacelike. A byte is a boundary when it is spacelike and the byte
before it is not (the first byte of a sequence: when it is spacelike), or when it is the document
boundary id. The global blocks run at the input position that READS the boundary byte, so their
output first shapes the prediction of the byte after it: in "The cat", the space is the boundary,
and the global model helps predict "c", the first byte of the word, the hardest to guess. A patch
thus starts with its boundary byte (" cat"). The start vector (position 0) is never a boundary.
patching="periodic" (the paper's ablation): input positions 0, P, 2P, ... are the boundaries, the
reference's x[:, ::P].

A row with more than T_G boundaries has no global position for the later ones: the predictions from
its (T_G+1)-th boundary position on get no global output and are not trained (their targets are
PAD in the loss), as in the reference. forward sets `untrained_fraction`: the share of the batch's
non-PAD targets left out so (a detached scalar tensor), for the trainer's metrics.

Sliding window: a local query sees its own position and the W - 1 before it (W keys; the
reference's flash path, window_size=(W-1, 0); its fallback mask lets W + 1 through).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import BOUNDARY_ID, MegaByteConfig
from model.layers import Transformer, init_block, trunc_normal_
from model.loss import ByteHead


def spacelike(ids: torch.Tensor) -> torch.Tensor:
    """ids (...) → (...) bool: not an ASCII letter or digit, nor a UTF-8 continuation byte."""
    digit = (ids >= ord("0")) & (ids <= ord("9"))
    letter = ((ids >= ord("A")) & (ids <= ord("Z"))) | ((ids >= ord("a")) & (ids <= ord("z")))
    continuation = (ids >= 0b1000_0000) & (ids < 0b1100_0000)
    return ~(digit | letter | continuation)


def word_boundaries(ids: torch.Tensor) -> torch.Tensor:
    """ids (B, n) from the start of a sequence → (B, n) bool: byte j is a boundary (spacelike after
    a byte that is not, or the document boundary id)."""
    space = spacelike(ids)
    first = space.clone()
    first[:, 1:] &= ~space[:, :-1]  # a run of spacelike bytes has one boundary, its first byte
    return first | (ids == BOUNDARY_ID)


class SpaceByte(nn.Module):
    decodes_with_cuda_graphs = False  # the global step comes at data-dependent bytes

    def __init__(self, config: MegaByteConfig):
        super().__init__()
        assert config.architecture == "spacebyte", "build_model picks the class for a config"
        self.config = config
        D_L, D_G, W = config.local_dim, config.global_dim, config.window
        first = config.local_layers // 2  # the reference's n_initial_layers
        self.embed = nn.Embedding(config.vocab_size, D_L)
        self.start = nn.Parameter(torch.empty(D_L))  # stands before the first byte
        learned = config.pos_embedding == "learned"
        self.pos_embed = nn.Embedding(config.seq_len, D_L) if learned else None
        self.global_pos_embed = nn.Embedding(config.global_length, D_G) if learned else None
        # the first local blocks and the global blocks write into a residual stream that goes on:
        # no final norm there, only before the head
        self.initial = Transformer(config, D_L, first, config.local_heads, window=W, final_norm=False)
        self.global_model = Transformer(config, D_G, config.global_layers, config.global_heads, final_norm=False)
        self.final = Transformer(config, D_L, config.local_layers - first, config.local_heads, window=W)
        for block in [*self.initial.blocks, *self.final.blocks]:  # one local stream of local_layers blocks
            init_block(block, config, config.local_layers)
        self.head = ByteHead(D_L, config.vocab_size)
        for tensor in (self.embed.weight, self.start, self.head.weight):
            trunc_normal_(tensor, config.init_std)
        for table in (self.pos_embed, self.global_pos_embed):
            if table is not None:
                trunc_normal_(table.weight, config.init_std)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.untrained_fraction = torch.zeros(())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    # ---- inputs and boundaries ----

    def inputs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """ids (B, n) → local inputs (B, n, D_L) at input positions start..start+n-1."""
        x = self.embed(ids)  # (B, n, D_L)
        if self.pos_embed is None:
            return x
        return x + self.pos_embed(torch.arange(start, start + ids.shape[1], device=ids.device))

    def sequence_inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, n) → inputs for positions 0..n (B, n+1, D_L): the start vector, then the bytes."""
        x = torch.cat([self.start.expand(ids.shape[0], 1, -1), self.embed(ids)], dim=1)  # (B, n+1, D_L)
        if self.pos_embed is None:
            return x
        return x + self.pos_embed(torch.arange(x.shape[1], device=ids.device))

    def boundaries(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, n) from the start of a sequence → (B, n+1) bool: input position t (reading byte
        t-1, the start vector at 0) is where a patch starts and the global blocks run."""
        B, n = ids.shape
        if self.config.patching == "periodic":
            positions = torch.arange(n + 1, device=ids.device)
            return (positions % self.config.patch_size == 0).expand(B, -1)  # (B, n+1)
        return F.pad(word_boundaries(ids), (1, 0), value=False)  # (B, n+1): the start vector is none

    def patches(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T') as forward reads them → boundary (B, T'): the input positions where a patch
        starts; untrained (B, T') bool: the targets that are not PAD from each row's (T_G+1)-th
        boundary on, which get no global output, so are not trained. No forward needed."""
        boundary = self.boundaries(ids[:, :-1])  # (B, T'): the last byte is read by no position
        untrained = (boundary.cumsum(dim=1) > self.config.global_length) & (ids != self.config.pad_id)
        return boundary, untrained

    def to_global(self, x: torch.Tensor, first_slot: int) -> torch.Tensor:
        """Local states (B, g, D_L) at global slots first_slot.. → global inputs (B, g, D_G): zeros
        in front, the local state in the last D_L dimensions (the reference's), + the slot's position."""
        x = F.pad(x, (self.config.global_dim - x.shape[-1], 0))  # (B, g, D_G)
        if self.global_pos_embed is None:
            return x
        return x + self.global_pos_embed(torch.arange(first_slot, first_slot + x.shape[1], device=x.device))

    # ---- training ----

    def global_slots(self, boundary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """boundary (B, T) → positions (B, G): each row's boundary positions in order, then its other
        positions (fillers, so that every row has G); used (B, G) bool: the slots that hold a boundary."""
        G = min(self.config.global_length, boundary.shape[1])
        positions = torch.argsort((~boundary).to(torch.int8), dim=1, stable=True)[:, :G]  # (B, G)
        used = torch.arange(G, device=boundary.device) < boundary.sum(dim=1, keepdim=True)  # (B, G)
        return positions, used

    def global_forward(self, x: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
        """x (B, T, D_L) after the first local blocks → x with the global output added at the first
        T_G boundaries of each row (B, T, D_L). Filler slots come after a row's boundaries, so
        causality keeps them from the real ones, and their outputs are dropped."""
        B, T, D_L = x.shape
        positions, used = self.global_slots(boundary)  # (B, G) twice
        index = positions[..., None].expand(-1, -1, D_L)  # (B, G, D_L)
        y = self.global_model(self.to_global(x.gather(1, index), 0))  # (B, G, D_G)
        y = y[..., -D_L:] * used[..., None].to(y.dtype)  # (B, G, D_L): nothing from the fillers
        assert y.shape == index.shape, f"global→local handover: {tuple(y.shape)} != {tuple(index.shape)}"
        return x.scatter_add(1, index, y)  # (B, T, D_L)

    def forward(self, ids: torch.Tensor, loss: bool = False):
        """ids (B, T') with T' ≤ T → logits (B, T', V); with loss, (mean nats, targets) instead, the
        positions past a row's T_G global positions not counted (see untrained_fraction)."""
        B, T = ids.shape
        if not 0 < T <= self.config.seq_len:
            raise ValueError(f"sequence of {T} bytes: the model reads 1 to seq_len={self.config.seq_len} bytes")
        x = self.initial(self.sequence_inputs(ids[:, : T - 1]))  # (B, T, D_L): the last byte predicts nothing here
        boundary, untrained = self.patches(ids)  # (B, T) twice
        x = self.final(self.global_forward(x, boundary))  # (B, T, D_L)
        counted = (ids != self.config.pad_id).sum()
        self.untrained_fraction = (untrained.sum() / counted.clamp(min=1)).detach()
        if loss:
            return self.head(x, ids.masked_fill(untrained, self.config.pad_id))
        return self.head(x)  # (B, T, V)

    # ---- cached decoding: local caches shared by the batch, a global cache per row ----

    def global_rows(self, x: torch.Tensor, boundary: torch.Tensor, state: dict) -> torch.Tensor:
        """x (B, n, D_L) at the n newest positions, boundary (B, n) → x with the global output added
        at each row's new boundaries that still have a global slot. Row by row: each row reaches its
        boundaries at other bytes, so each has its own global caches and boundary count."""
        T_G, D_L = self.config.global_length, x.shape[-1]
        for b, row in enumerate(boundary):
            slots = min(state["boundaries"][b], T_G)  # the global slots this row has filled
            positions = row.nonzero()[:, 0]  # (g,)
            state["boundaries"][b] += len(positions)
            positions = positions[: T_G - slots]  # those that still have a slot
            if len(positions):
                y = self.to_global(x[b, positions][None], slots)  # (1, g, D_G)
                y = self.global_model(y, state["global_caches"][b])  # (1, g, D_G)
                x[b, positions] += y[0, :, -D_L:]
        return x

    def out_of_global_positions(self, state: dict) -> bool:
        """Has some row read more than T_G boundaries? Its newest prediction then has no global
        output (training leaves such targets out): generate_ids reads a shorter window instead."""
        return max(state["boundaries"]) > self.config.global_length

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, max_len: int) -> tuple[torch.Tensor, dict]:
        """Read a prompt ids (B, L); room for max_len bytes in all. Returns logits for byte L (B, V)."""
        if max_len > self.config.seq_len:
            raise ValueError(f"prompt + new bytes = {max_len} > the model's seq_len={self.config.seq_len}")
        B, L = ids.shape
        state = {"ids": ids.new_empty(B, max_len), "length": L, "boundaries": [0] * B,
                 "initial_caches": self.initial.new_caches(max_len), "final_caches": self.final.new_caches(max_len),
                 "global_caches": [self.global_model.new_caches(self.config.global_length) for _ in range(B)]}
        state["ids"][:, :L] = ids
        x = self.initial(self.sequence_inputs(ids), state["initial_caches"])  # (B, L+1, D_L)
        x = self.global_rows(x, self.boundaries(ids), state)  # (B, L+1, D_L)
        x = self.final(x, state["final_caches"])  # (B, L+1, D_L)
        return self.head(x[:, -1]), state  # (B, V)

    def step_boundary(self, state: dict) -> torch.Tensor:
        """Is the newest input position (reading byte length-1) a boundary? (B, 1) bool."""
        t = state["length"]  # the input position
        if self.config.patching == "periodic":
            return torch.full((state["ids"].shape[0], 1), t % self.config.patch_size == 0, device=state["ids"].device)
        return word_boundaries(state["ids"][:, max(0, t - 2): t])[:, -1:]  # the byte and the one before

    @torch.no_grad()
    def decode_step(self, next_ids: torch.Tensor, state: dict) -> torch.Tensor:
        """Append one byte per row, next_ids (B,); return the logits for the byte after it (B, V)."""
        state["ids"][:, state["length"]] = next_ids
        state["length"] += 1  # next_ids is byte length-1, read at input position length
        x = self.initial(self.inputs(next_ids[:, None], state["length"]), state["initial_caches"])  # (B, 1, D_L)
        x = self.global_rows(x, self.step_boundary(state), state)  # (B, 1, D_L)
        return self.head(self.final(x, state["final_caches"])[:, 0])  # (B, V)
