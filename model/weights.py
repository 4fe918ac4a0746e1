"""Exported weights: one safetensors file whose metadata holds the model config.

    save_weights(model, "model.safetensors", extra={"modality": "text"})
    model, metadata = load_weights("model.safetensors")

Tied tensors (the output head sharing the byte embedding) are stored once; safetensors'
save_model / load_model handle that. A file that is not one of these (another format, cut short,
tensors that do not fit its config) is a ValueError naming it: "not a megabyte model file".

The config in the header is not believed before it is checked against the tensors the header
lists: its layers are bounded by their count, then the model is built on the meta device (no
memory) and every shape compared with the file's (tensor_shapes, shape_problem); only then is it
built for real, at the size of the file.
"""

import json
import os
import textwrap
import warnings

import torch
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
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    except SafetensorError as error:
        raise refusal(path, f"not a whole safetensors file: {error}") from None
    if metadata.get("format") != FORMAT:
        raise refusal(path, f"no {FORMAT!r} metadata")
    try:
        config = MegaByteConfig.from_dict(json.loads(metadata["config"]))
        problem = shape_problem(tensor_shapes(config, len(stored)), stored)
    except (KeyError, ValueError, TypeError, OverflowError, RuntimeError) as error:
        raise refusal(path, f"its model config is unusable: {textwrap.shorten(str(error), 200)}") from None
    if problem:
        raise refusal(path, f"its tensors do not fit its config: {problem}")
    return config, metadata


def tensor_shapes(config: MegaByteConfig, stored: int) -> dict[str, tuple[tuple, str]]:
    """name → (shape, the name of the tensor it is: tied names share one) of every tensor a model
    of `config` holds, from a build on the meta device. `stored`: how many tensors its file holds;
    a config with more layers than that is refused unbuilt (10**9 layers never finish building,
    even on the meta device)."""
    from model import build_model  # model/__init__ imports this module

    layers = config.global_layers + config.local_layers
    if layers > stored:
        raise ValueError(f"{layers} layers, and the file holds {stored} tensors")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. zero-element tensors: the comparison will say so
        model = build_model(config)
    first = {}  # id of a tensor → its first name
    return {name: (tuple(tensor.shape), first.setdefault(id(tensor), name))
            for name, tensor in model.state_dict(keep_vars=True).items()}


def shape_problem(expected: dict[str, tuple[tuple, str]], stored: dict[str, tuple]) -> str | None:
    """What keeps the tensors `stored` (name → shape) from being the model's (tensor_shapes):
    one it has no place for, another shape, or a tensor missing (a tied one may be stored under
    any of its names); None if they fit."""
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        return f"{len(unexpected)} tensor(s) it has no place for, e.g. {unexpected[0]!r}"
    for name, shape in stored.items():
        if tuple(shape) != expected[name][0]:
            return f"{name} is {list(shape)}, and its config makes it {list(expected[name][0])}"
    missing = sorted({tensor for _, tensor in expected.values()} - {expected[name][1] for name in stored})
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
    return None


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
