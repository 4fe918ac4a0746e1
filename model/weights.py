"""Exported weights: one safetensors file whose metadata holds the model config.

    save_weights(model, "model.safetensors", extra={"modality": "text"})
    model, metadata = load_weights("model.safetensors")

Tied tensors (the output head sharing the byte embedding) are stored once; safetensors'
save_model / load_model handle that. A file that is not one of these (another format, cut short,
tensors that do not fit its config) is a ValueError naming it: "not a megabyte model file".
"""

import json
import os
import textwrap

import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from model.config import MegaByteConfig

FORMAT = "megabyte-weights"


def save_weights(model: nn.Module, path, extra: dict | None = None) -> None:
    """extra: more string-valued metadata (e.g. modality, image size) for the tools."""
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    metadata.update({key: str(value) for key, value in (extra or {}).items()})
    save_model(model, str(path), metadata=metadata)
    # safetensors creates the file 0600: give it the mode any other output gets, 0666 less the
    # umask (which os.umask can only read by setting it, so it is put straight back)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def refusal(path, reason) -> ValueError:
    return ValueError(f"{path}: not a megabyte model file ({reason})")


def read_header(path) -> tuple[MegaByteConfig, dict]:
    """(model config, metadata) from the file's header alone: no tensor is read, so arguments can
    be checked against the model before it is loaded."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    except SafetensorError as error:
        raise refusal(path, f"not a whole safetensors file: {error}") from None
    if metadata.get("format") != FORMAT:
        raise refusal(path, f"no {FORMAT!r} metadata")
    try:
        return MegaByteConfig.from_dict(json.loads(metadata["config"])), metadata
    except (KeyError, ValueError, TypeError) as error:
        raise refusal(path, f"its model config is unusable: {error}") from None


def load_weights(path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata); the model class follows the stored config."""
    from model import build_model  # model/__init__ imports this module

    config, metadata = read_header(path)
    try:
        model = build_model(config)
    except (ValueError, TypeError) as error:
        raise refusal(path, f"its model config is unusable: {error}") from None
    try:
        load_model(model, str(path), device=device)
    except (SafetensorError, RuntimeError) as error:  # missing, unexpected or misshapen tensors
        raise refusal(path, f"its tensors do not fit its config: {textwrap.shorten(str(error), 200)}") from None
    return model.eval(), metadata
