"""Fuzzing model files: an exported .safetensors and a checkpoint folder (DeepSpeed's ZeRO-0 file,
the trainer state, config.json, COMPLETE, the latest pointer), made from a tiny model.

Each case damages a fresh copy of one of them: bit flips (mostly where the structure is: headers,
JSON, a zip's directory), truncation, a length field (the safetensors header length, a tensor's
shape or offsets, a size in COMPLETE) set to 0, -1, 2^31 or 2^63, a JSON value swapped for one of
another type, a file name in COMPLETE or `latest` pointing out of the folder. A damaged checkpoint
file usually gets its COMPLETE record rewritten to match, as if the damage came before the save:
then the checks of what the file is must catch it. The exported file is then read by `megabyte
generate`, the checkpoint by `megabyte export` and by a resume's choice of checkpoint, in this
process. What must hold, within 10 s a case:

- the outcome is a correct result or one line naming the error (exit 1 or 2), never a traceback;
- nothing is written but the output the command was asked for;
- what export writes loads back as a model file.

Seeded: the same cases every run (FUZZ_SEED=n in the environment runs another set).
"""

import contextlib
import io
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch

from model import build_model
from model.weights import load_weights
from pipeline.format.errors import UsageError, report_errors
from tools.cli import build_parser
from train import checkpoint
from train.config import load_config
from train.state import RunState

from helpers import deadline, snapshot

SEED = int(os.environ.get("FUZZ_SEED", 20240512))
CASES = 200  # of each kind
MODEL = ["model.preset=tiny", "model.seq_len=16", "model.patch_size=4", "model.global_dim=16",
         "model.global_layers=1", "model.global_heads=2", "model.local_dim=8", "model.local_layers=1",
         "model.local_heads=2", "model.dropout=0.0", "deepspeed.zero_stage=0"]
NUMBERS = [0, -1, 2**31, 2**63]
OTHERS = ["x", 3, 2.5, True, None, [1], {"a": 1}, -1, 2**63]  # values of every JSON type
META_VALUES = ["image", "audio", "", "patch", "{}", "[1]", '{"size": -1}', '{"size": 4, "resize": 7}',
               '{"size": "x"}', '{"size": 2147483648}', '{"sample_rate": 0, "encoding": "x"}', "not json"]
PARSER = build_parser()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of a tiny model, made as training makes it, and its export."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = load_config("tiny-cpu", MODEL)
    config.data.datasets = [str(root / "elsewhere")]
    folder = root / "run" / checkpoint.CHECKPOINTS / checkpoint.step_folder_name(3)
    folder.mkdir(parents=True)
    torch.save({"module": build_model(config.model).state_dict()}, folder / "mp_rank_00_model_states.pt")
    checkpoint.write_state(folder, 0, 1, {"run": RunState(step=3).state_dict()})
    (folder / checkpoint.CONFIG).write_text(json.dumps({**config.to_dict(), "media": {"modality": "text"}}))
    checkpoint.write_marker(folder)
    (folder.parent / checkpoint.LATEST).write_text(folder.name + "\n")
    weights = root / "model.safetensors"
    assert run(["export", str(folder), "--out", str(weights)]) == 0
    return {"weights": weights, "checkpoint": folder}


def run(argv: list[str]) -> int:
    """A command as main() runs it, in this process: an exit code, and an error as one line."""
    args = PARSER.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report_errors(args.command, args.func, args)
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 1, 2) and "Traceback" not in err.getvalue(), err.getvalue()
    assert (lines == []) if code == 0 else (len(lines) == 1 and lines[0].startswith(
        f"megabyte {args.command}: error: ")), err.getvalue()
    return code


# ---------------------------------------------------------------------------------------------
# damage


def flip(data: bytes, rng: random.Random, structure: int) -> bytes:
    """1-3 bit flips, most within the first `structure` bytes or the last 200 (a zip's directory)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        region = rng.random()
        if region < 0.6:
            i = rng.randrange(min(structure, len(data)))
        elif region < 0.8:
            i = rng.randrange(max(0, len(data) - 200), len(data))
        else:
            i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def change_leaf(value, rng: random.Random, change):
    """`value` (parsed JSON) with one leaf, chosen at random, replaced by change(leaf)."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        return {**value, key: change_leaf(value[key], rng, change)}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return value[:i] + [change_leaf(value[i], rng, change)] + value[i + 1:]
    return change(value)


def swap_value(value, rng: random.Random):
    """`value` (parsed JSON) with one leaf replaced by a value of another type or a bad number."""
    def swapped(leaf):
        if isinstance(leaf, str) and leaf.startswith("{"):  # JSON inside JSON: a config in metadata
            try:
                return json.dumps(swap_value(json.loads(leaf), rng))
            except ValueError:
                pass
        return rng.choice([v for v in OTHERS + NUMBERS if type(v) is not type(leaf) or v != leaf])

    return change_leaf(value, rng, swapped)


def set_number(value, rng: random.Random):
    """`value` (parsed JSON) with one leaf, if a number (a size, a step, a dimension), set to a bad one."""
    def bad(leaf):
        return rng.choice(NUMBERS) if isinstance(leaf, (int, float)) and not isinstance(leaf, bool) else leaf

    return change_leaf(value, rng, bad)


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def damage_safetensors(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    header, body = split_safetensors(data)
    kind = rng.choice(["flip", "truncate", "length", "shape", "swap", "config", "config", "meta"])
    if kind == "flip":
        return kind, flip(data, rng, 8 + len(data) - len(body))
    if kind == "truncate":
        return kind, data[:rng.randrange(len(data))]
    if kind == "length":
        return kind, struct.pack("<q" if rng.random() < 0.5 else "<Q", rng.choice(NUMBERS) % 2**63) + data[8:]
    metadata = header.get("__metadata__")
    if kind == "config" and metadata and "config" in metadata:  # still a string: the config's values
        config = json.loads(metadata["config"])
        metadata["config"] = json.dumps(swap_value(config, rng) if rng.random() < 0.5 else set_number(config, rng))
        return kind, join_safetensors(header, body)
    if kind == "meta" and metadata:  # what the tools read: modality, the data's arguments, image order
        key = rng.choice(["modality", "data_arguments", "image_order", "step", "format"])
        metadata[key] = rng.choice(META_VALUES)
        if key == "data_arguments" or rng.random() < 0.5:
            metadata["modality"] = rng.choice(["image", "audio", "text"])
        return kind, join_safetensors(header, body)
    tensors = sorted(name for name in header if name != "__metadata__")
    if kind == "shape" and tensors:  # (the trainer state's file may hold none: then a swap)
        entry = header[rng.choice(tensors)]
        field = rng.choice(["shape", "data_offsets"])
        if entry[field]:
            entry[field][rng.randrange(len(entry[field]))] = rng.choice(NUMBERS)
        return kind, join_safetensors(header, body)
    return "swap", join_safetensors(swap_value(header, rng), body)


def damage_checkpoint(folder: Path, rng: random.Random) -> str:
    """Damage one file of the checkpoint; usually rewrite COMPLETE to match. What it did."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    name = rng.choice([*names, checkpoint.MARKER, checkpoint.LATEST])
    path = folder / name if name != checkpoint.LATEST else folder.parent / name
    data = path.read_bytes()
    kinds = ["flip", "truncate"] + ["swap", "swap", "number"] * name.endswith((".json", checkpoint.MARKER))
    kinds += ["outside"] * (name in (checkpoint.MARKER, checkpoint.LATEST))
    kind = "safetensors" if name.endswith(".safetensors") else rng.choice(kinds)
    if kind == "safetensors":
        kind, data = damage_safetensors(data, rng)
    elif kind == "flip":
        data = flip(data, rng, 1024)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "number":
        data = json.dumps(set_number(json.loads(data), rng)).encode()
    elif kind == "swap":
        data = json.dumps(swap_value(json.loads(data), rng)).encode()
    elif kind == "outside" and name == checkpoint.LATEST:
        data = rng.choice([b"../step-000003\n", b"/etc\n", b"step-000003/../../run/checkpoints/step-000003\n"])
    elif kind == "outside":
        record = json.loads(data)
        victim = rng.choice(sorted(record["files"]))
        record["files"][rng.choice(["../../" + victim, "/etc/passwd", f"./{victim}", f"state/../{victim}"])] = \
            record["files"].pop(victim)
        data = json.dumps(record).encode()
    path.write_bytes(data)
    consistent = name not in (checkpoint.MARKER, checkpoint.LATEST) and rng.random() < 0.75
    if consistent:
        checkpoint.write_marker(folder)
    return f"{kind} {name}{' (COMPLETE rewritten)' if consistent else ''}"


# ---------------------------------------------------------------------------------------------
# the cases


def fuzz(tmp_path: Path, case: int, kind: str, pristine: dict[str, Path]) -> str:
    """One case of `kind` in a fresh folder; returns what was damaged."""
    rng = random.Random(f"{SEED}-{kind}-{case}")
    where = tmp_path / f"case{case}-{kind}"
    out = where / "out" / "model.safetensors"
    if kind == "weights":
        model = where / "model.safetensors"
        model.parent.mkdir()
        what, data = damage_safetensors(pristine["weights"].read_bytes(), rng)
        model.write_bytes(data)
        argv = ["generate", "--model", str(model), "--bytes", "2", "--out", str(out), "--no-progress"]
    else:
        run_dir = where / "run"
        shutil.copytree(pristine["checkpoint"].parents[1], run_dir)
        folder = run_dir / checkpoint.CHECKPOINTS / pristine["checkpoint"].name
        what = damage_checkpoint(folder, rng)
        argv = ["export", str(run_dir), "--out", str(out)]
    out.parent.mkdir()
    before = snapshot(where)
    try:
        with deadline(10):
            if run(argv) == 0 and kind == "checkpoint":
                load_weights(out)  # what export wrote is a model file
            if kind == "checkpoint":
                try:
                    checkpoint.newest_intact(folder.parent, move_aside=False)
                except UsageError as error:
                    assert "\n" not in str(error)
        after = snapshot(where)
        after.pop(str(out.relative_to(where)), None)
        assert after == before, "something was written besides the output"
    except AssertionError as error:
        raise AssertionError(f"case {case} ({kind}: {what}): {error}") from error
    shutil.rmtree(where)
    return what.split()[0]


def test_fuzzed_model_files_are_refused_in_one_line_or_read_right(pristine, tmp_path):
    seen = {}
    for case in range(CASES):
        for kind in ("weights", "checkpoint"):
            damage = fuzz(tmp_path, case, kind, pristine)
            seen[kind, damage] = seen.get((kind, damage), 0) + 1
    assert {damage for _, damage in seen} >= {"flip", "truncate", "length", "shape", "swap", "number",
                                              "outside", "config", "meta"}, seen
