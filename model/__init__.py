"""Byte-level models: MegaByte (Yu et al. 2023) and the vanilla byte-transformer baseline.

    from model import PRESETS, build_model, byte_loss, generate
    model = build_model(PRESETS["tiny"])
    loss = byte_loss(model(ids), ids)            # ids (B, T) LongTensor; nats, PAD ignored
    text = generate(model, [b"Hello"], 100, temperature=0.8, top_p=0.95, seed=0)

Pure PyTorch; imports nothing else of this project.
"""

import torch.nn as nn

from model.baseline import ByteTransformer
from model.config import MegaByteConfig
from model.generate import generate, generate_ids, sample
from model.layers import KVCache, bits_per_byte, byte_loss
from model.megabyte import MegaByte
from model.presets import PRESET_SIZES, PRESETS


def build_model(config: MegaByteConfig) -> nn.Module:
    """MegaByte or ByteTransformer, as config.architecture says."""
    return MegaByte(config) if config.architecture == "megabyte" else ByteTransformer(config)


__all__ = [
    "MegaByteConfig", "PRESETS", "PRESET_SIZES", "MegaByte", "ByteTransformer", "build_model",
    "byte_loss", "bits_per_byte", "generate", "generate_ids", "sample", "KVCache",
]
