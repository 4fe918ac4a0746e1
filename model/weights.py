"""Exported weights: one safetensors file whose metadata holds the model config.

    save_weights(model, "model.safetensors", extra={"modality": "text"})
    model, metadata = load_weights("model.safetensors")

Tied tensors (the output head sharing the byte embedding) are stored once; safetensors'
save_model / load_model handle that.
"""

import json

import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from model.config import MegaByteConfig

FORMAT = "megabyte-weights"


def save_weights(model: nn.Module, path, extra: dict | None = None) -> None:
    """extra: more string-valued metadata (e.g. modality, image size) for the tools."""
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    metadata.update({key: str(value) for key, value in (extra or {}).items()})
    save_model(model, str(path), metadata=metadata)


def load_weights(path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata); the model class follows the stored config."""
    from model import build_model  # model/__init__ imports this module

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a megabyte weights file (no {FORMAT!r} metadata)")
    try:  # files from before the vocabulary was fixed hold its ids too: checked against ours
        config = MegaByteConfig.from_dict(json.loads(metadata["config"]))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    model = build_model(config)
    load_model(model, str(path), device=device)
    return model.eval(), metadata
