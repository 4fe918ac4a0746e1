"""Checkpoint → one safetensors file (+ its model config) that model/ loads without DeepSpeed.

ZeRO shards of any stage are consolidated into full fp32 tensors with DeepSpeed's own
zero_to_fp32 reader; stage 0 checkpoints hold the whole module already.

DeepSpeed's files are pickles. Unless the user trusts the checkpoint (--trust-checkpoint), they are
read with torch.load(weights_only=True): tensors, plain containers and the few DeepSpeed classes
in SAFE_GLOBALS (data only), never arbitrary code.
"""

import json
import os
import pickle
import textwrap
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import torch
from safetensors import SafetensorError

from model import MegaByteConfig, build_model
from model.weights import load_weights, read_header, save_weights, shape_problem, tensor_shapes
from pipeline.format.errors import UsageError
from pipeline.format.files import write_atomically
from pipeline.format.manifest import load_manifest
from train import checkpoint
from train.config import stored_model_config


def find_checkpoint(path) -> Path:
    """A checkpoint folder, a run's checkpoints/ folder or a run directory → a complete checkpoint."""
    path = Path(path)
    if (path / checkpoint.MARKER).is_file():
        problem = checkpoint.damage(path)
        if problem:
            raise UsageError(f"{path}: broken checkpoint ({problem})")
        return path
    for root in (path / checkpoint.CHECKPOINTS, path):
        folder = checkpoint.newest_intact(root, move_aside=False) if root.is_dir() else None
        if folder is not None:
            return folder
    raise UsageError(f"{path}: no complete checkpoint here (expected a run directory or a "
                     f"step-NNNNNN folder with a {checkpoint.MARKER} marker)")


def safe_globals() -> list:
    """The classes DeepSpeed's checkpoint pickles hold besides tensors: plain data holders."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


@contextmanager
def plain_torch_load(trust: bool):
    """Within: every torch.load (DeepSpeed's own included) reads plain data only, unless `trust`;
    a file that needs more is one UsageError naming --trust-checkpoint."""
    if trust:
        yield
        return
    original = torch.load

    def load(file, *args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a damaged header's pickle protocol: the load decides
            try:
                return original(file, *args, **kwargs)
            except pickle.UnpicklingError as error:
                reason = unpickler_reason(str(error))
                raise UsageError(f"{file}: holds more than plain data ({reason}); reading it could "
                                 "run code: pass --trust-checkpoint if you trust its source") from None

    with mock.patch.object(torch, "load", load):
        yield


def unpickler_reason(message: str) -> str:
    """The useful part of torch's weights-only refusal ("Unsupported global: GLOBAL x.y ...")."""
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("error:", 1)[1].split(". Please")[0].strip()
    return message.strip().splitlines()[0] if message.strip() else "unreadable pickle"


def stored_shapes(folder: Path, zero_stage: int, trust: bool) -> tuple[Path, dict[str, tuple]]:
    """(DeepSpeed's model-states file, name → shape of every weight it lists: the module's tensors
    at stage 0, its param_shapes under ZeRO), read without reading a tensor (mmap)."""
    files = sorted(folder.glob("*mp_rank_*_model_states.pt"))  # ZeRO-3: one per rank, alike in this
    if not files:
        raise UsageError(f"{folder}: no DeepSpeed model states in it (*mp_rank_*_model_states.pt)")
    states = load_states(files[0], trust, mmap=True)
    key = "module" if zero_stage == 0 else "param_shapes"
    try:
        listed = states[key].items() if zero_stage == 0 else [i for group in states[key] for i in group.items()]
        shapes = {name: tuple(value.shape if zero_stage == 0 else value) for name, value in listed}
    except (KeyError, TypeError, AttributeError, ValueError):
        shapes = None
    if not shapes or not all(type(n) is int and n >= 0 for shape in shapes.values() for n in shape):
        raise UsageError(f"{files[0]}: its {key} is not a list of tensor shapes")
    return files[0], shapes


def load_states(path: Path, trust: bool, mmap: bool = False) -> dict:
    """One of DeepSpeed's .pt files, read as plain_torch_load allows; a damaged one is a UsageError."""
    with plain_torch_load(trust):
        try:
            return torch.load(path, map_location="cpu", weights_only=not trust, mmap=mmap)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError,
                OSError, pickle.UnpicklingError) as error:  # what a damaged pickle or zip makes torch raise
            raise UsageError(f"{path}: unreadable ({textwrap.shorten(str(error), 120)})") from None


def consolidated_state_dict(folder: Path, zero_stage: int, trust: bool = False) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # consolidation runs on the CPU anyway
    if zero_stage == 0:
        return load_states(sorted(folder.glob("mp_rank_*_model_states.pt"))[0], trust)["module"]
    with plain_torch_load(trust):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
                # its progress prints are noise here; errors still raise
                return get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError, AttributeError, EOFError,
                OSError) as error:
            # files that pass their record and their listed shapes, yet disagree with each other
            raise UsageError(f"{folder}: its ZeRO files do not add up to the model "
                             f"({textwrap.shorten(str(error), 120)})") from None


MEDIA = "media"  # the key of data_metadata() in a checkpoint's config.json


def data_metadata(datasets: list[str]) -> dict:
    """What generate needs to turn bytes back into media: the training data's modality and,
    for images and audio, their converter arguments (size, sample rate, encoding)."""
    manifests = []
    for path in datasets:
        try:
            manifests.append(load_manifest(path))
        except UsageError:
            pass  # exported elsewhere than the data: the metadata is a convenience
    modalities = sorted({m.modality for m in manifests})
    extra = {"modality": modalities[0] if len(modalities) == 1 else "mixed"}
    if manifests and len(modalities) == 1:
        extra["data_arguments"] = json.dumps(manifests[0].arguments, sort_keys=True)
    return extra


def model_from_checkpoint(path, trust: bool = False) -> tuple[torch.nn.Module, dict, Path]:
    """(model with the consolidated weights, export metadata, checkpoint folder) — no DeepSpeed
    engine, one process; `trust`: DeepSpeed's pickles may hold anything (see plain_torch_load)."""
    folder = find_checkpoint(path)
    model, metadata = model_from_folder(folder, trust)
    return model, metadata, folder


def model_from_folder(folder: Path, trust: bool) -> tuple[torch.nn.Module, dict]:
    """model_from_checkpoint of a folder find_checkpoint returned (checked already)."""
    config = checkpoint.read_config(folder)  # its sections' types checked
    stage = config.get("deepspeed", {}).get("zero_stage")
    if stage not in (0, 1, 2, 3):
        raise UsageError(f"{folder / checkpoint.CONFIG}: deepspeed.zero_stage = {stage!r}, expected 0 to 3")
    # the config is believed only once the model it describes (built on the meta device) has the
    # shapes DeepSpeed's files list: only then is anything allocated
    states, stored = stored_shapes(folder, stage, trust)
    try:
        model_config = stored_model_config(config)
        expected = tensor_shapes(model_config, len(stored))
    except (KeyError, ValueError, TypeError, OverflowError, RuntimeError) as error:
        raise UsageError(f"{folder / checkpoint.CONFIG}: its model is unusable "
                         f"({textwrap.shorten(str(error), 200)})") from None
    refuse_mismatch(states, expected, stored)
    weights = consolidated_state_dict(folder, stage, trust)
    refuse_mismatch(folder, expected, {name: tuple(tensor.shape) for name, tensor in weights.items()})
    model = build_model(model_config)
    model.load_state_dict(weights, strict=False)  # shapes checked: only a tied name may be missing
    try:
        step = checkpoint.read_state(folder)["run"]["step"]
        metadata = export_metadata(config, step)
    except (KeyError, TypeError, IndexError) as error:
        raise UsageError(f"{folder}: its trainer state or config lacks {error}") from None
    if type(step) is not int or step < 0:
        raise UsageError(f"{folder}: its trainer state says step {step!r}")
    return model.eval(), metadata


def refuse_mismatch(source: Path, expected: dict, shapes: dict) -> None:
    problem = shape_problem(expected, shapes)
    if problem:
        raise UsageError(f"{source}: does not match the model of {checkpoint.CONFIG} ({problem})")


def find_model(path) -> Path:
    """An exported .safetensors file as it is, or the complete checkpoint `path` names, checked
    (find_checkpoint: every file hashed, so done once): what load_found and read_model_header take."""
    path = Path(path)
    return path if path.is_file() else find_checkpoint(path)


def load_any(path, trust: bool = False) -> tuple[torch.nn.Module, dict]:
    """An exported .safetensors file or a checkpoint → (model in eval mode, metadata)."""
    return load_found(find_model(path), trust)


def load_found(found: Path, trust: bool = False) -> tuple[torch.nn.Module, dict]:
    """load_any of what find_model returned."""
    if found.is_file():
        try:
            model, metadata = load_weights(found)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        model, metadata = model_from_folder(found, trust)
    return model, check_media(metadata, found)


def read_model_header(found: Path) -> tuple[MegaByteConfig, dict]:
    """(model config, metadata but the step) of what find_model returned, read without any
    weights: the tools check their arguments against the model before loading it (load_found)."""
    try:
        if found.is_file():
            config, metadata = read_header(found)
            return config, check_media(metadata, found)
        config = checkpoint.read_config(found)
        return stored_model_config(config), check_media(export_metadata(config, step=None), found)
    except (KeyError, ValueError, TypeError) as error:
        raise UsageError(str(error) if found.is_file() else f"{found}: its config is unusable ({error})") from None


def check_media(metadata: dict, source) -> dict:
    """`metadata` (an exported file's, or a checkpoint's export metadata), its fields the tools
    turn bytes into media with checked: a known modality and image order, data_arguments a JSON
    object with the picture size or the audio's rate and encoding they use. UsageError naming
    `source` otherwise."""
    from pipeline.convert.audio import AudioSettings
    from pipeline.format.audio_codec import DEFAULT_ENCODING, ENCODINGS

    def bad(what: str) -> UsageError:
        return UsageError(f"{source}: its metadata is unusable ({what})")

    modality, order = metadata.get("modality", "text"), metadata.get("image_order", "raster")
    if modality not in ("text", "image", "audio", "mixed") or order not in ("raster", "patch"):
        raise bad(f"modality {modality!r}, image_order {order!r}")
    try:
        arguments = json.loads(metadata.get("data_arguments", "{}"))
    except (TypeError, ValueError):
        arguments = None
    if not isinstance(arguments, dict):
        raise bad("data_arguments is not a JSON object")
    size, resize = arguments.get("size"), arguments.get("resize", "crop")
    if modality == "image" and not (type(size) is int and 1 <= size <= 2**12 and resize in ("crop", "box")):
        raise bad(f"an image size of {size!r}, resized by {resize!r}")
    rate = arguments.get("sample_rate", AudioSettings.sample_rate)  # the converter's defaults
    encoding = arguments.get("encoding", DEFAULT_ENCODING)
    if modality == "audio" and not (type(rate) is int and 1 <= rate <= 2**20 and encoding in ENCODINGS):
        raise bad(f"audio at {rate!r} Hz in {encoding!r}")
    return metadata


def export_metadata(config: dict, step: int | None) -> dict:
    """The checkpoint's step, image order and its data's modality and converter arguments (as
    recorded at training start; read from the datasets for checkpoints saved without them)."""
    media = config.get(MEDIA) or data_metadata(config["data"]["datasets"])
    return {"step": step, "image_order": config["data"]["image_order"], **media}


def export(path, out: Path, trust: bool = False) -> Path:
    """Write the newest complete checkpoint under `path` as one safetensors file; returns the
    checkpoint folder it came from."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give --out the .safetensors file to write")
    model, metadata, folder = model_from_checkpoint(path, trust)
    made = [parent for parent in out.parents if not parent.exists()]  # innermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, lambda tmp: save_weights(model, tmp, metadata))
    except (OSError, SafetensorError) as error:  # a full disk is a SafetensorError ("I/O error: ...")
        for parent in made:  # the folders made for it go too: nothing of a failed export stays
            try:
                parent.rmdir()
            except OSError:
                break  # not made here, or not empty
        raise UsageError(f"{out}: cannot write the export ({getattr(error, 'strerror', None) or error})") from None
    return folder
