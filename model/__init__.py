"""Byte-level models: MegaByte (Yu et al. 2023), its ablations, the byte-transformer and
PerceiverAR baselines, and SpaceByte (Slagle 2024), all called the same way.

    from model import PRESETS, build_model, byte_loss, generate
    model = build_model(PRESETS["tiny"])
    loss = byte_loss(model(ids), ids)            # ids (B, T) LongTensor; nats, PAD ignored
    loss, targets = model(ids, loss=True)        # the same, fused with the head: what training uses
    text = generate(model, [b"Hello"], 100, temperature=0.8, top_p=0.95, seed=0)

Pure PyTorch; imports nothing else of this project.
"""

import torch.nn as nn

from model.ablations import NoGlobal, NoLocal
from model.baseline import ByteTransformer
from model.config import MegaByteConfig
from model.generate import generate, generate_ids, sample
from model.layers import KVCache
from model.loss import ByteHead, bits_per_byte, byte_loss
from model.megabyte import MegaByte
from model.perceiver_ar import PerceiverAR
from model.presets import PRESETS
from model.spacebyte import SpaceByte


MODELS = {"megabyte": MegaByte, "transformer": ByteTransformer, "perceiver_ar": PerceiverAR,
          "no_local": NoLocal, "no_global": NoGlobal, "spacebyte": SpaceByte}


def build_model(config: MegaByteConfig) -> nn.Module:
    """The model config.architecture names. Every one maps ids (B, T) to logits (B, L, V) for the
    last L bytes (L = T, or min(latents, T) for PerceiverAR) and decodes with prefill/decode_step."""
    return MODELS[config.architecture](config)


__all__ = [
    "MegaByteConfig", "PRESETS", "MegaByte", "ByteTransformer", "PerceiverAR", "NoLocal",
    "NoGlobal", "SpaceByte", "build_model",
    "byte_loss", "bits_per_byte", "ByteHead", "generate", "generate_ids", "sample", "KVCache",
]
