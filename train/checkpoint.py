"""Checkpoints: named parts of the trainer, saved together in OUT/checkpoints/step-NNNNNN/.

    step-000200/
      <DeepSpeed's files>           the engine part: model, optimizer (ZeRO partitions), lr schedule
      state/rank-00000.json         every other part's state on rank 0 (loader position, RNGs, step,
      state/rank-00000.safetensors    bytes seen): plain JSON, its tensors in safetensors; one
      ...                             pair per rank
      config.json                   the run's resolved config (what export rebuilds the model from)
      COMPLETE                      written last: every other file's size and sha256 (JSON); a
                                      folder without it is an interrupted save, ignored
    latest                          name of the newest complete checkpoint, replaced atomically
    universal/step-000200/          the checkpoint converted for another world size (train.reshard),
                                      made by the first resume that needed it, pruned with it
    broken-step-000300/             a complete checkpoint whose files no longer match COMPLETE,
                                      moved aside by the resume that found it (kept to look at)

This module knows the parts only by name and protocol. A Stateful (torch.distributed.checkpoint's
protocol, as in torchtitan) hands over plain data: numbers, strings, lists, dicts and tensors; nothing of ours is ever unpickled. A
part that SavesItself writes and reads its own files with every rank taking part: DeepSpeed's
engine, whose ZeRO partitions live on every rank (DeepSpeed's format is its own). Every rank takes
part in a save; rank 0 writes the marker after a barrier, so COMPLETE exists only once every rank
has written its share. Resuming verifies the newest checkpoint against its COMPLETE record and
falls back to the newest intact one.

A checkpoint resumes at any world size. Every part's state but the PerRank ones (the RNGs) is
alike on every rank, so a rank the saving run did not have reads rank 0's; a PerRank part starts
afresh there, and rank r < saved ranks restores what rank r saved.
"""

import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pipeline.format.errors import UsageError
from pipeline.format.files import file_sha256, inside, write_text_atomically
from train.config import check_stored

if TYPE_CHECKING:  # importing torch.distributed.checkpoint costs ~0.6 s, and no isinstance needs it
    from torch.distributed.checkpoint.stateful import Stateful

MARKER = "COMPLETE"
LATEST = "latest"
STATE = "state"  # folder of the per-rank state files
UNIVERSAL = "universal"  # folder of the checkpoints converted for another world size (train.reshard)
CONFIG = "config.json"
STATE_FORMAT = "megabyte-trainer-state"
STATE_VERSION = 1
TENSOR = "__tensor__"  # {TENSOR: key}: where a tensor stood, its key in the safetensors file
CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, in its output directory
STEP_PREFIX = "step-"  # a checkpoint's folder: step-NNNNNN, the optimizer steps done when saved


def step_folder_name(step: int) -> str:
    """The name of the checkpoint folder saved after optimizer step `step`: step-000200."""
    return f"{STEP_PREFIX}{step:06d}"


def step_of(folder: Path) -> int:
    """The optimizer step a checkpoint folder (step-NNNNNN) was saved after."""
    return int(Path(folder).name.removeprefix(STEP_PREFIX))


@runtime_checkable
class SavesItself(Protocol):
    def save(self, folder: Path) -> None: ...  # collective: every rank calls it

    def load(self, folder: Path) -> None: ...


@runtime_checkable
class PerRank(Protocol):
    """A Stateful whose state is its process's own (the RNGs), where every other is alike on all
    ranks. A rank that the saving run did not have starts it afresh instead of restoring it."""

    def start_afresh(self, rank: int) -> None: ...


Part: TypeAlias = "Stateful | SavesItself"


def save(root: Path, step: int, parts: dict[str, Part], config: dict, keep_last: int) -> Path:
    """Save every part as it is after optimizer step `step`; every rank calls this."""
    root = Path(root)
    folder = root / step_folder_name(step)
    rank = dist.get_rank()
    # the plain states first, before any part writes files: the state at the step boundary
    states = {name: part.state_dict() for name, part in parts.items() if not isinstance(part, SavesItself)}
    if rank == 0 and folder.exists():  # a leftover of an interrupted save
        shutil.rmtree(folder)
    dist.barrier()
    try:
        write_parts(folder, rank, parts, states)
        dist.barrier()
        if rank == 0:
            (folder / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
            write_marker(folder)
            write_text_atomically(root / LATEST, folder.name + "\n")
    except OSError as error:  # e.g. the disk is full: the previous checkpoint stays the newest
        shutil.rmtree(folder, ignore_errors=True)
        previous = latest(root)
        raise UsageError(f"{folder}: cannot save the checkpoint ({error.strerror or error}); "
                         f"removed it, the newest is still {previous.name if previous else 'none'}") from None
    if rank == 0:
        prune(root, keep_last)
    dist.barrier()
    return folder


def write_parts(folder: Path, rank: int, parts: dict[str, Part], states: dict) -> None:
    """Every part's files: those that save themselves, then the plain states (see save)."""
    for part in parts.values():
        if isinstance(part, SavesItself):
            part.save(folder)
    write_state(folder, rank, dist.get_world_size(), states)


def load(folder: Path, parts: dict[str, Part], rank: int) -> None:
    """Restore every part from a complete checkpoint, in the order of `parts`, at any world size:
    rank r reads the states saved by rank r; a rank the saving run did not have reads rank 0's
    (the states of shared parts are alike on every rank) and starts its PerRank parts afresh.
    (The engine's ZeRO partitions are resharded by train.reshard before this.)"""
    folder = Path(folder)
    saved = saved_ranks(folder)
    states = read_state(folder, rank if rank < saved else 0)
    for name, part in parts.items():
        if isinstance(part, SavesItself):
            part.load(folder)
        elif isinstance(part, PerRank) and rank >= saved:
            part.start_afresh(rank)
        elif name not in states:
            raise UsageError(f"{folder}: holds no {name} state")
        else:
            load_part(folder, name, part, states[name])


def load_part(folder: Path, name: str, part: "Stateful", state: dict) -> None:
    try:
        part.load_state_dict(state)
    except ValueError as error:  # e.g. the loader refusing another data order
        raise UsageError(f"{folder}: cannot restore the {name}: {error}") from None


def write_state(folder: Path, rank: int, world_size: int, states: dict) -> None:
    tensors = {}
    record = {"format": STATE_FORMAT, "version": STATE_VERSION, "rank": rank, "world_size": world_size,
              "parts": split_tensors(states, "", tensors)}
    base = folder / STATE / f"rank-{rank:05d}"
    base.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, base.with_suffix(".safetensors"))
    base.with_suffix(".json").write_text(json.dumps(record) + "\n")


def saved_ranks(folder: Path) -> int:
    """How many ranks saved the checkpoint (one state file each)."""
    folder = Path(folder)
    saved = len(list((folder / STATE).glob("rank-*.json")))
    if not saved:
        raise UsageError(f"{folder}: no trainer state in it ({STATE}/rank-*.json): written by an "
                         "older version? start the run in a new out_dir")
    return saved


def read_state(folder: Path, rank: int = 0) -> dict:
    """Each part's state as `rank` saved it ({name: state})."""
    folder = Path(folder)
    saved_ranks(folder)
    base = folder / STATE / f"rank-{rank:05d}"
    try:
        record = json.loads(base.with_suffix(".json").read_text())
        tensors = load_file(base.with_suffix(".safetensors"))
    except (OSError, ValueError, SafetensorError) as error:
        raise UsageError(f"{base}: unreadable trainer state ({error})") from None
    if (record.get("format"), record.get("version")) != (STATE_FORMAT, STATE_VERSION):
        raise UsageError(f"{base}.json: not a {STATE_FORMAT} v{STATE_VERSION} file")
    return join_tensors(record["parts"], tensors)


def read_config(folder: Path) -> dict:
    """The run's resolved config, as saved with the checkpoint (TrainConfig.to_dict()): a JSON
    object whose sections hold values of their fields' types, as its readers expect."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: cannot read the checkpoint's config ({error})") from None
    try:
        check_stored(config)
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    return config


def split_tensors(value, key: str, tensors: dict):
    """`value` with each tensor moved into `tensors` and replaced by {TENSOR: its key}."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {TENSOR: key}
    if isinstance(value, dict):
        return {name: split_tensors(item, f"{key}/{name}", tensors) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [split_tensors(item, f"{key}/{i}", tensors) for i, item in enumerate(value)]
    return value


def join_tensors(value, tensors: dict):
    """Inverse of split_tensors (tuples come back as lists)."""
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return tensors[value[TENSOR]]
        return {name: join_tensors(item, tensors) for name, item in value.items()}
    if isinstance(value, list):
        return [join_tensors(item, tensors) for item in value]
    return value


def complete_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).glob(f"{STEP_PREFIX}*") if (p / MARKER).is_file())


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; drop older and interrupted ones, and the
    universal conversions of checkpoints no longer kept."""
    complete = complete_checkpoints(root)
    keep = set(complete[-keep_last:]) if keep_last > 0 else set(complete)
    newest = complete[-1] if complete else None
    for folder in Path(root).glob(f"{STEP_PREFIX}*"):
        if folder not in keep and (folder in complete or newest and folder.name < newest.name):
            shutil.rmtree(folder, ignore_errors=True)
    for conversion in (Path(root) / UNIVERSAL).glob(f"*{STEP_PREFIX}*"):  # .step-*.tmp: an interrupted one
        if Path(root) / conversion.name not in keep:
            shutil.rmtree(conversion, ignore_errors=True)


def file_record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def write_marker(folder: Path) -> None:
    """COMPLETE: the size and sha256 of every file of the checkpoint, written last (atomically)."""
    files = {str(path.relative_to(folder)): file_record(path)
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MARKER}
    write_text_atomically(folder / MARKER, json.dumps({"format": "megabyte-checkpoint", "files": files},
                                                      indent=1) + "\n")


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint's files, or None: a name in COMPLETE that leads out
    of the folder, a file missing, resized or changed since it was saved, or one that is not what
    its name says (unreadable: a record rewritten to match a damaged file is not believed either)."""
    try:
        text = (Path(folder) / MARKER).read_text()
        if text == "ok\n":  # written before markers held a record: nothing to check against
            return None
        files = json.loads(text)["files"]
        records = [(name, record["size"], record["sha256"]) for name, record in files.items()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"unreadable {MARKER} record"
    for name, size, sha256 in records:
        path = inside(Path(folder), name)
        if path is None:
            return f"{MARKER} names {name!r}, which is not a file inside the checkpoint folder"
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes, {size!r} when saved"
        if file_record(path)["sha256"] != sha256:
            return f"{name} changed since it was saved (sha256 differs)"
    for name, _, _ in records:
        problem = unreadable(Path(folder), name)
        if problem:
            return f"{name}: {problem}"
    return None


def unreadable(folder: Path, name: str) -> str | None:
    """Why a checkpoint's file is not what its name says, found without unpickling or loading
    it, or None: a .pt that is no zip archive (torch.save's format), a .json that does not parse,
    a .safetensors whose header does not, a config.json its readers cannot use."""
    path = folder / name
    try:
        if name == CONFIG:
            read_config(folder)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt"):
                pass
        elif path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                if not any(member.endswith("data.pkl") for member in archive.namelist()):
                    return "not a torch.save file (no data.pkl in it)"
    except UsageError as error:
        return str(error).removeprefix(f"{path}: ")
    except zipfile.BadZipFile as error:
        return f"not a torch.save file ({error})"
    except (OSError, ValueError, SafetensorError) as error:
        return f"unreadable ({error})"
    return None


def newest_intact(root: Path, move_aside: bool = True) -> Path | None:
    """The newest complete checkpoint whose files are as saved, saying on stderr which newer ones
    are broken and (with move_aside, as a resume does) moving them to broken-step-NNNNNN, out of
    the way of later saves and pruning. None if there is no complete checkpoint.
    Raises UsageError when there are complete checkpoints but none is intact: starting from
    scratch over them would silently throw the run away."""
    root = Path(root)
    candidates = complete_checkpoints(root)
    pointed = latest(root)
    if pointed is not None and pointed in candidates:  # the pointer first, then newest first
        candidates.remove(pointed)
        candidates.append(pointed)
    broken = []
    for folder in reversed(candidates):
        problem = damage(folder)
        if problem is None:
            for name, why in broken:
                moved = f"moved aside to broken-{name}; " if move_aside else ""
                print(f"checkpoint {root / name} is broken ({why}): {moved}using {folder.name}",
                      file=sys.stderr)
                if move_aside:
                    (root / name).rename(root / f"broken-{name}")
            return folder
        broken.append((folder.name, problem))
    if broken:
        raise UsageError(f"{root}: no intact checkpoint ({'; '.join(f'{n}: {w}' for n, w in broken)}); "
                         "to start from scratch, move the checkpoints folder aside")
    return None


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under root (the `latest` pointer, checked), or None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(errors="replace").strip()
        folder = root / name
        if name.startswith(STEP_PREFIX) and inside(root, name) and (folder / MARKER).is_file():
            return folder
    complete = complete_checkpoints(root)
    return complete[-1] if complete else None
