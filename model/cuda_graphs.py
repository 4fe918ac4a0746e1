"""CUDA graphs for MegaByte's local decoding step (generate(..., cuda_graphs=True)).

Shapes: B batch, D_L local width, V vocabulary, r cross-patch positions, P bytes per patch.

After every byte MegaByte runs its local model for one position and then its head: about fifteen
small kernels per layer, each launched from Python. At batch 1 launching them takes longer than
running them. The step's shapes repeat from patch to patch: the local caches never hold more than
r + P positions, and besides the new byte's input vector (B, D_L) the only thing that differs
between two steps is how many positions the caches hold before it (0 .. r+P-1). So one graph per
cache length, captured the first time that length comes, replays the step of every later patch as
a single launch, reading the same cache buffers. The global model's caches grow by a patch at every
global step, so its step (once per P bytes) stays eager.

A graph replays the addresses it was captured with: the caches must be the ones of this decoding
state (a new prefill, e.g. when generation slides its window, makes new ones and new graphs).
"""

import torch

from model.layers import KVCache


class LocalStepGraphs:
    """step(x (B, 1, D_L)) → logits (B, V): the local model over one position with `caches`, then
    the head. Calling this runs the same computation through one CUDA graph per cache length."""

    def __init__(self, step, caches: list[KVCache]):
        self.step = step
        self.caches = caches
        self.x = None  # (B, 1, D_L): the graphs' input, made like the first x, copied into before each replay
        self.graphs = {}  # cache length before the step → (graph, its logits (B, V))
        self.pool = None  # one memory pool for all the graphs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, D_L) → logits (B, V), the caches one position longer, as step(x)."""
        length = self.caches[0].length
        if self.x is None:
            self.x = torch.empty_like(x)
        self.x.copy_(x)
        if length not in self.graphs:
            self.graphs[length] = self.capture(length)
        graph, logits = self.graphs[length]
        graph.replay()
        for cache in self.caches:  # what update() would have done outside the graph
            cache.length = length + 1
        return logits.clone()  # the next replay of this graph overwrites its output

    def capture(self, length: int):
        """A graph of step(self.x) with the caches at `length`, and its output tensor. The step runs
        once first, for real, on a side stream (as CUDA graphs require: kernels are chosen and
        workspaces allocated outside the capture); it writes the same keys and values the replay
        that follows writes again."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step(self.x)
        torch.cuda.current_stream().wait_stream(side)
        self.rewind(length)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self.step(self.x)  # recorded, not run
        self.pool = graph.pool()
        self.rewind(length)
        return graph, logits

    def rewind(self, length: int):
        """Put the caches' lengths back to before the step (the buffers are overwritten in place)."""
        for cache in self.caches:
            cache.length = length
