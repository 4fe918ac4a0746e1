"""Model configuration: one dataclass for MegaByte, its ablations and the baselines it is compared with.

Shapes named in model/: B batch, T bytes per sequence, P bytes per patch, K = T/P patches,
D_G = global_dim/P global width per byte, D_L local width, V vocabulary (256 bytes + specials),
N latents (PerceiverAR).

Every architecture is made of a global model (the global_* fields) and/or a local model (local_*):
architecture="megabyte": global model of width P·D_G over K patches, local model of width D_L over
    the P bytes of each patch (paper §2). Options (§2.3): local_cross_patch=r lets every local
    attention layer also see the last r positions of the previous patch; conv_encoder runs causal
    convolutions over the byte embeddings before they are cut into patches.
architecture="transformer": the paper's baseline, a single causal decoder over all T bytes,
    described by the global_* fields (it is MegaByte with P=1 and no local model).
architecture="perceiver_ar": the PerceiverAR baseline (Hawthorne et al. 2022): one causal
    cross-attention from the last `latents` positions to all T, then a decoder over those latents
    (global_* fields), P=1 and no local model; it predicts only the last `latents` bytes.
architecture="no_local": the "w/o local model" ablation (Table 10): the global model alone, with P
    output heads that predict the P bytes of the next patch at once (those heads read the whole
    global output, so tie_embeddings has nothing to tie there).
architecture="no_global": the "w/o global model" ablation: the local model alone, over patches of P
    bytes that see nothing of each other.
architecture="spacebyte": SpaceByte (Slagle 2024, model/spacebyte.py): local blocks of width D_L
    (local_dim) with sliding-window attention over local_window bytes run over every byte; the
    global model (global_*) runs only at patch boundaries, at most global_len of them per sequence.
    patching="spacelike" puts a boundary after every word (the paper's rule), "periodic" one every
    patch_size bytes (its ablation); patch_size is 1 with spacelike patching. global_len = 0 means
    the reference's T/6 (T/P when periodic), local_window = 0 means local_dim (the reference's).
local_attention chooses the kernel of the local model's attention, not what it computes: "sdpa"
    (F.scaled_dot_product_attention) or "matmul" (q·kᵀ, softmax in fp32, ·v as batched matmuls).
    The local model attends over P ≤ 16 bytes (r+P keys with cross-patch attention) in B·K tiny
    sequences, which the flash kernel pads up to its block size, so plain matmuls may be faster
    there; a GPU profile (bench/local_attention.py) decides. The global models always use sdpa.
A field that an architecture does not use must keep its "off" value (patch_size=1, local_layers=0,
global_layers=0, latents=0, local_cross_patch=0, conv_encoder=False, local_attention="sdpa",
global_len=0, local_window=0, patching="spacelike", as the error says), so that a config never
carries numbers that mean nothing.
"""

import dataclasses
import math
from dataclasses import dataclass

# The byte vocabulary: ids 0..255 are the bytes (all of them data), then PAD (ignored by the loss)
# and the document boundary (generation stops on it). It belongs to the data, whose format defines
# it (pipeline/format/vocab.py); but model/ imports nothing else of ours, so the numbers are written
# here too, as constants and not as settings: a model whose ids differed from the data's would read
# every batch wrong without a word. tests/test_model.py checks that the two agree; to_dict() records
# them, and from_dict() refuses a config (an exported file, say) that has other ids.
VOCAB_SIZE = 258
PAD_ID = 256
BOUNDARY_ID = 257
VOCABULARY = {"vocab_size": VOCAB_SIZE, "pad_id": PAD_ID, "boundary_id": BOUNDARY_ID}

ARCHITECTURES = ("megabyte", "transformer", "perceiver_ar", "no_local", "no_global", "spacebyte")
WITH_GLOBAL = ("megabyte", "transformer", "perceiver_ar", "no_local")  # have a global model
WITH_LOCAL = ("megabyte", "no_global")  # have a local model
UNPATCHED = ("transformer", "perceiver_ar")  # read single bytes: patch_size=1
PATCHED = tuple(a for a in ARCHITECTURES if a not in UNPATCHED)  # read patches: strided inference applies
ACTIVATIONS = ("gelu", "relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POS_EMBEDDINGS = ("learned", "none")
LOCAL_ATTENTIONS = ("sdpa", "matmul")  # kernels of the local model's attention
PATCHINGS = ("spacelike", "periodic")  # where SpaceByte's patches start
# sane bounds, far above the paper's models (32 layers, 1.2M-byte images): a config from a file is
# refused past them before anything is built (building 10**9 layers never ends, even unallocated)
MAX_LAYERS = 256  # per stack, global and local
MAX_SEQ_LEN = 2**24


@dataclass
class MegaByteConfig:
    architecture: str = "megabyte"
    seq_len: int = 8192  # T, in bytes; a multiple of patch_size
    patch_size: int = 8  # P
    global_dim: int = 2048  # width of the global model, P·D_G (the baseline's width)
    global_layers: int = 14
    global_heads: int = 16
    local_dim: int = 1024  # D_L
    local_layers: int = 18
    local_heads: int = 8
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio · width
    activation: str = "gelu"
    dropout: float = 0.1  # attention and residual dropout, none on embeddings (as the paper)
    norm: str = "layernorm"
    pos_embedding: str = "learned"  # learned absolute byte positions, or none
    bias: bool = True  # biases in linear layers and LayerNorm
    init_std: float = 0.02  # truncated normal, cut at ±2 std
    tie_embeddings: bool = True  # output head shares the (local) byte embedding, as the paper
    activation_checkpointing: bool = False  # recompute each block in backward (saves memory)
    latents: int = 0  # perceiver_ar only: N, the last N positions (queries of its cross-attention)
    local_cross_patch: int = 0  # megabyte only: r ≤ P positions of the previous patch (0 = off)
    conv_encoder: bool = False  # megabyte, no_local: causal convolutions (kernels 3, 5, 7)
    local_attention: str = "sdpa"  # megabyte, no_global: the local attention's kernel (see above)
    global_len: int = 0  # spacebyte only: T_G, global positions per sequence (0 = T/6, or T/P when periodic)
    local_window: int = 0  # spacebyte only: W, keys of the local sliding-window attention (0 = local_dim)
    patching: str = "spacelike"  # spacebyte only: "spacelike" (after words) or "periodic" (every patch_size)

    def __post_init__(self):
        def check(ok: bool, message: str):
            if not ok:
                raise ValueError(f"MegaByteConfig: {message}")

        check(self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}")
        check(self.pos_embedding in POS_EMBEDDINGS, f"pos_embedding must be one of {POS_EMBEDDINGS}, got {self.pos_embedding!r}")
        check(self.local_attention in LOCAL_ATTENTIONS,
              f"local_attention must be one of {LOCAL_ATTENTIONS}, got {self.local_attention!r}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.mlp_ratio > 0 and self.init_std > 0, "mlp_ratio and init_std must be positive")
        check(self.patch_size >= 1 and self.seq_len >= 1, "patch_size and seq_len must be positive")
        check(self.seq_len <= MAX_SEQ_LEN, f"seq_len={self.seq_len} is over {MAX_SEQ_LEN:,} bytes")
        check(max(self.global_layers, self.local_layers) <= MAX_LAYERS,
              f"global_layers={self.global_layers}, local_layers={self.local_layers}: at most {MAX_LAYERS} each")
        check(self.seq_len % self.patch_size == 0,
              f"seq_len={self.seq_len} must be a multiple of patch_size={self.patch_size}; "
              f"try seq_len={math.ceil(self.seq_len / self.patch_size) * self.patch_size}")
        self.check_architecture(check)

    def check_architecture(self, check):
        arch, P = self.architecture, self.patch_size
        if arch in UNPATCHED:
            check(P == 1 and self.local_layers == 0,
                  f"{arch} has no patches and no local model: set patch_size=1 and local_layers=0 "
                  "(its width, depth and heads are global_dim, global_layers, global_heads)")
        if arch == "no_local":
            check(self.local_layers == 0, "no_local has no local model: set local_layers=0")
        if arch == "no_global":
            check(self.global_layers == 0, "no_global has no global model: set global_layers=0")
        if arch in WITH_GLOBAL:
            check(self.global_layers >= 1, f"global_layers must be at least 1 for {arch}")
            check(self.global_heads >= 1, f"global_heads must be at least 1 for {arch}")
            check(self.global_dim % P == 0,
                  f"global_dim={self.global_dim} must be a multiple of patch_size={P} "
                  f"(the global model's width is P·D_G); try global_dim={max(1, round(self.global_dim / P)) * P}")
            check(self.global_dim % self.global_heads == 0,
                  f"global_heads={self.global_heads} must divide global_dim={self.global_dim}")
        if arch in WITH_LOCAL:
            check(self.local_layers >= 1, f"local_layers must be at least 1 for {arch}")
            check(self.local_heads >= 1, f"local_heads must be at least 1 for {arch}")
            check(self.local_dim % self.local_heads == 0,
                  f"local_heads={self.local_heads} must divide local_dim={self.local_dim}")
        if arch == "perceiver_ar":
            check(1 <= self.latents <= self.seq_len,
                  f"perceiver_ar needs 1 <= latents <= seq_len={self.seq_len}, got latents={self.latents}")
        else:
            check(self.latents == 0, f"latents is a perceiver_ar field: set latents=0 for {arch}")
        if arch == "spacebyte":
            self.check_spacebyte(check)
        else:
            check(self.global_len == 0 and self.local_window == 0 and self.patching == "spacelike",
                  f"global_len, local_window and patching are spacebyte fields: set global_len=0, "
                  f"local_window=0, patching=\"spacelike\" for {arch}")
        if arch == "megabyte":
            check(0 <= self.local_cross_patch <= P,
                  f"local_cross_patch must be in [0, patch_size={P}] (positions of the previous patch), "
                  f"got {self.local_cross_patch}")
            # rotary positions turn pairs of dimensions: the local head size must be even
            check(self.local_cross_patch == 0 or (self.local_dim // self.local_heads) % 2 == 0,
                  f"local_cross_patch needs an even local head size, got local_dim/local_heads="
                  f"{self.local_dim // self.local_heads}")
        else:
            check(self.local_cross_patch == 0,
                  f"local_cross_patch is a megabyte option: set local_cross_patch=0 for {arch}")
        check(self.local_attention == "sdpa" or arch in WITH_LOCAL,
              f"local_attention chooses the local model's kernel, and {arch} has no local model: set "
              f"local_attention=\"sdpa\" for {arch}")
        check(not self.conv_encoder or arch in ("megabyte", "no_local"),
              f"conv_encoder is an option of megabyte and no_local (the patch embedder): set "
              f"conv_encoder=false for {arch}")

    def check_spacebyte(self, check):
        T, P = self.seq_len, self.patch_size
        check(self.patching in PATCHINGS, f"patching must be one of {PATCHINGS}, got {self.patching!r}")
        check(self.local_attention == "sdpa", "spacebyte's local attention is a sliding window over all T "
                                              "bytes, run by sdpa: set local_attention=\"sdpa\"")
        check(self.patching == "periodic" or P == 1,
              f"spacebyte's spacelike patches have no fixed size: set patch_size=1 (or patching=\"periodic\" "
              f"for a boundary every patch_size={P} bytes)")
        for name in ("global", "local"):
            layers, heads, dim = (getattr(self, f"{name}_{field}") for field in ("layers", "heads", "dim"))
            check(layers >= 1 and heads >= 1, f"spacebyte needs {name}_layers >= 1 and {name}_heads >= 1")
            check(dim % heads == 0, f"{name}_heads={heads} must divide {name}_dim={dim}")
        check(self.global_dim >= self.local_dim,
              f"spacebyte pads the local state (local_dim={self.local_dim}) with zeros to the global width: "
              f"global_dim={self.global_dim} must be at least local_dim")
        check(0 <= self.global_len <= T,
              f"global_len={self.global_len}: spacebyte's global positions must be 1 to seq_len={T} "
              f"(0: T/6, the reference's)")
        check(self.global_length >= 1, f"seq_len={T} leaves no global position: set global_len >= 1")
        check(self.local_window >= 0, f"local_window={self.local_window}: the window must be at least 1 byte "
                                      f"(0: local_dim, the reference's)")
        check(self.patching == "spacelike" or self.global_length >= T // P,
              f"periodic patching has {T // P} patches in seq_len={T}: set global_len=0 or at least {T // P}")

    @property
    def global_length(self) -> int:  # T_G, spacebyte's global positions per sequence
        if self.global_len:
            return self.global_len
        return self.seq_len // (self.patch_size if self.patching == "periodic" else 6)

    @property
    def window(self) -> int:  # W, spacebyte's local attention window in bytes
        return self.local_window or self.local_dim

    def check_modality(self, modality: str) -> None:
        """ValueError for a model that cannot read data of this modality ("text", "image", "audio"):
        spacelike patches follow words, which images and audio do not have."""
        if self.architecture == "spacebyte" and self.patching == "spacelike" and modality in ("image", "audio"):
            raise ValueError(f"MegaByteConfig: spacebyte's spacelike patches follow words, and {modality} "
                             f"bytes have none: set patching=\"periodic\" (a patch every patch_size bytes)")

    @property
    def vocab_size(self) -> int:  # V; the vocabulary is fixed (see VOCABULARY), not a setting
        return VOCAB_SIZE

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def boundary_id(self) -> int:
        return BOUNDARY_ID

    @property
    def num_patches(self) -> int:  # K
        return self.seq_len // self.patch_size

    @property
    def global_byte_dim(self) -> int:  # D_G
        return self.global_dim // self.patch_size

    def to_dict(self) -> dict:
        """The fields and the vocabulary; plain str/int/float/bool: JSON-safe."""
        return {**dataclasses.asdict(self), **VOCABULARY}

    @classmethod
    def from_dict(cls, d: dict) -> "MegaByteConfig":
        """Inverse of to_dict; the vocabulary may be left out, and must be ours when given."""
        fields = dict(d)
        for name, ours in VOCABULARY.items():
            if name in fields and fields.pop(name) != ours:
                raise ValueError(f"MegaByteConfig: {name}={d[name]}, but the byte vocabulary is fixed "
                                 f"({', '.join(f'{k}={v}' for k, v in VOCABULARY.items())}, the data's): "
                                 "a model with other ids would read the data wrong")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"MegaByteConfig: unknown field(s) {unknown}; known fields are "
                             f"{sorted(known | set(VOCABULARY))}")
        for f in dataclasses.fields(cls):  # a stored config is read from a file: its types too
            value = fields.get(f.name, f.default)
            kinds = (int, float) if f.type is float else (f.type,)
            if type(value) not in kinds:  # exact: a bool is no number here
                raise ValueError(f"MegaByteConfig: {f.name}={value!r}: expected {f.type.__name__}, "
                                 f"not {type(value).__name__}")
        return cls(**fields)
