"""FLOPs of one forward pass, counted from the shapes: what `megabyte flops` prints and what the
trainer's model-FLOPs utilisation (MFU) divides by.

Counted: the matrix products, 2 FLOPs per multiply-add (Kaplan et al. 2020's convention, as the
paper's §3). Not counted: embedding lookups, norms, activations, softmax, dropout (a few FLOPs per
element, against thousands per position for the products).

One transformer layer of width w, per position that goes through it:
    projections    2 · 4w²                    q, k, v and the output projection
    MLP            2 · 2·ratio·w²             (3·ratio·w² with swiglu's gate)
    attention      2 · 2w · keys              q·k scores and the weighted sum of v, over the keys
                                              that position attends to
    causal attention over n positions: position i sees i+1 keys, (n+1)/2 on average; with a
    sliding window of W keys, min(i+1, W).
Training costs 3 × the forward (the backward pass computes two products per forward product).

Per architecture (T bytes, P per patch, K = T/P patches, V vocabulary):
    transformer    T positions through the stack (keys (T+1)/2), a V-way head at each
    megabyte       K patches through the global stack (width P·D_G), T bytes through the local one
                   (keys (P+1)/2, plus r with cross-patch attention), the D_G → D_L hand-off and
                   the head at each byte; the conv encoder's 3 convolutions at each byte
    no_local       K patches through the global stack, P output heads of width P·D_G per patch
    no_global      T bytes through the local stack (keys (P+1)/2) and the head
    perceiver_ar   the cross-attention layer: k, v for all T positions, q, output projection and
                   MLP for the N latents, each latent seeing the T - N positions before the
                   latents plus the latents up to itself; then N positions through the decoder
                   and the head. It predicts N bytes per forward, so FLOPs per byte divide by N.
    spacebyte      T bytes through the local stacks (keys min(i+1, W)), T_G positions through the
                   global stack (the batch is padded to T_G whatever the text), the head at each
                   byte; padding D_L to D_G and adding back are no products
"""

from dataclasses import dataclass, field

from model.config import UNPATCHED, MegaByteConfig

CONV_KERNELS = (3, 5, 7)  # the conv encoder's (model/layers.py ConvEncoder)
LINEAR_ATTENTION_FLOPS = 9  # per position, layer and unit of width: the paper's Figure 3 costing


@dataclass
class Flops:
    parts: dict[str, float] = field(default_factory=dict)  # forward FLOPs of one sequence, by part
    predicted: int = 0  # bytes one forward predicts: T, or the latents of PerceiverAR

    @property
    def forward(self) -> float:
        return sum(self.parts.values())

    @property
    def forward_per_byte(self) -> float:
        return self.forward / self.predicted

    @property
    def training_per_byte(self) -> float:
        return 3 * self.forward_per_byte


def dense_flops(config: MegaByteConfig, width: int) -> float:
    """Forward FLOPs of one layer's projections and MLP at one position."""
    mlp = (3 if config.activation == "swiglu" else 2) * config.mlp_ratio
    return 2 * (4 + mlp) * width * width


def attention_flops(width: int, keys: float, linear_attention: bool = False) -> float:
    """Forward FLOPs of one layer's attention at one position that attends to `keys` positions."""
    return LINEAR_ATTENTION_FLOPS * width if linear_attention else 4 * width * keys


def causal_keys(n: int) -> float:
    """Mean keys per position of causal attention over n positions."""
    return (n + 1) / 2


def window_keys(n: int, window: int) -> float:
    """Mean keys per position of sliding-window causal attention (W keys) over n positions."""
    inside = min(n, window)  # positions 0..inside-1 see i+1 keys, the others W
    return (inside * (inside + 1) / 2 + (n - inside) * window) / n


def count_flops(config: MegaByteConfig, linear_attention: bool = False) -> Flops:
    """Forward FLOPs of one full sequence (config.seq_len bytes), by part. linear_attention costs
    every attention as a linear-attention transformer's (the paper's Figure 3 baseline)."""
    c = config
    T, P, V = c.seq_len, c.patch_size, c.vocab_size
    K = T // P
    flops = Flops(predicted=c.latents if c.architecture == "perceiver_ar" else T)

    def stack(name: str, width: int, layers: int, positions: int, keys: float) -> None:
        flops.parts[name] = layers * positions * dense_flops(c, width)
        flops.parts[f"{name} attention"] = layers * positions * attention_flops(width, keys, linear_attention)

    if c.architecture == "perceiver_ar":
        N, w = c.latents, c.global_dim
        # one layer for the N latents, each seeing the T - N positions before them and the latents
        # up to itself, plus the keys and values of those T - N positions
        stack("cross", w, 1, N, T - N + causal_keys(N))
        flops.parts["cross"] += (T - N) * 2 * 2 * w * w
        stack("global", w, c.global_layers, N, causal_keys(N))
        flops.parts["head"] = 2 * w * V * N
    elif c.architecture == "transformer":
        stack("global", c.global_dim, c.global_layers, T, causal_keys(T))
        flops.parts["head"] = 2 * c.global_dim * V * T
    elif c.architecture == "spacebyte":
        stack("local", c.local_dim, c.local_layers, T, window_keys(T, c.window))
        stack("global", c.global_dim, c.global_layers, c.global_length, causal_keys(c.global_length))
        flops.parts["head"] = 2 * c.local_dim * V * T
        return flops
    if c.architecture in UNPATCHED:
        return flops
    if c.conv_encoder:  # over the bytes that reach the global model: all but the last patch
        flops.parts["conv encoder"] = 2 * sum(CONV_KERNELS) * c.global_byte_dim ** 2 * (T - P)
    if c.architecture in ("megabyte", "no_local"):
        stack("global", c.global_dim, c.global_layers, K, causal_keys(K))
    if c.architecture == "no_local":
        flops.parts["head"] = 2 * c.global_dim * P * V * K  # P heads, each reading the whole patch output
        return flops
    if c.architecture == "megabyte":
        flops.parts["global to local"] = 2 * c.global_byte_dim * c.local_dim * T
    stack("local", c.local_dim, c.local_layers, T, causal_keys(P) + c.local_cross_patch)
    flops.parts["head"] = 2 * c.local_dim * V * T
    return flops


def training_flops_per_byte(config: MegaByteConfig) -> float:
    """Forward + backward FLOPs per predicted byte: what MFU divides by."""
    return count_flops(config).training_per_byte
