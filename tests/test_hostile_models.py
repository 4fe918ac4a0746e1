"""Model files that lie consistently: an exported .safetensors whose config was rewritten, a
checkpoint whose files were damaged and whose COMPLETE record was rewritten to match them, a
COMPLETE record naming files outside its folder. Each is refused in one line naming the file,
before any module is built from a config the tensors do not bear out, and writes nothing; a resume
falls back to the newest intact checkpoint."""

import json
import re
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model

from model import MegaByteConfig, build_model
from model.weights import FORMAT, save_weights
from tools.cli import main as cli
from train import checkpoint
from train.config import load_config
from train.state import RunState

from helpers import TINY_MODEL, error_line

CONFIG = MegaByteConfig(seq_len=64, patch_size=8, global_dim=64, global_layers=2, global_heads=2,
                        local_dim=32, local_layers=1, local_heads=2, dropout=0.0)
LIES = [("global_layers", 10**9), ("global_dim", 2**40), ("seq_len", 2**40), ("global_layers", 1),
        ("local_dim", 64), ("global_layers", "2"), ("dropout", [0.0]), ("global_heads", 0),
        ("local_heads", -1)]


def exported(tmp_path: Path, metadata: dict | None = None, **changes) -> Path:
    """A model file whose header's config says `changes` and whose tensors are CONFIG's."""
    path = tmp_path / "model.safetensors"
    config = {**CONFIG.to_dict(), **changes}
    save_model(build_model(CONFIG), str(path),
               metadata={"format": FORMAT, "config": json.dumps(config), **(metadata or {})})
    return path


def model_commands(model: Path, out: Path, data: Path) -> dict[str, list[str]]:
    return {"generate": ["generate", "--model", str(model), "--bytes", "4", "--out", str(out)],
            "eval": ["eval", str(model), "--data", str(data)],
            "export": ["export", str(model), "--out", str(out)]}


def refused(capsys, argv: list[str], named: Path, out: Path) -> str:
    """argv exits 2 with one line naming `named`, and `out` is not written."""
    assert cli(argv) == 2
    line = error_line(capsys)
    assert str(named) in line and not out.exists(), line
    return line


@pytest.mark.parametrize("field, value", LIES)
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_an_exported_config_the_tensors_do_not_bear_out_is_one_line(tmp_path, capsys, data, field, value,
                                                                     command):
    model, out = exported(tmp_path, **{field: value}), tmp_path / "out.bin"
    refused(capsys, model_commands(model, out, data["text"])[command], model, out)


@pytest.mark.parametrize("metadata", [{"modality": "image", "data_arguments": "{}"},
                                      {"modality": "image", "data_arguments": "not json"},
                                      {"modality": "image", "data_arguments": '{"size": -1}'},
                                      {"modality": "audio", "data_arguments": '{"encoding": "mp3"}'},
                                      {"modality": "smell"}, {"image_order": "spiral"}])
def test_metadata_the_tools_cannot_use_is_one_line(tmp_path, capsys, metadata):
    model, out = exported(tmp_path, metadata), tmp_path / "out.png"
    line = refused(capsys, ["generate", "--model", str(model), "--out", str(out)], model, out)
    assert "its metadata is unusable" in line


def test_an_honest_exported_file_still_generates(tmp_path):
    model, out = exported(tmp_path), tmp_path / "out.bin"
    assert cli(["generate", "--model", str(model), "--bytes", "4", "--out", str(out)]) == 0
    assert len(out.read_bytes()) == 4


# ---------------------------------------------------------------------------------------------
# checkpoints: each file checked against COMPLETE, then against what its name says it is


def handmade_checkpoint(root: Path, step: int = 1, zero_stage: int = 0, **model_changes) -> Path:
    """A checkpoint folder as training writes it (DeepSpeed's files made by hand), its config's
    model changed by `model_changes` after its files were made."""
    config = load_config("tiny-cpu", [*TINY_MODEL, f"deepspeed.zero_stage={zero_stage}"])
    config.data.datasets = [str(root / "elsewhere")]
    folder = root / "checkpoints" / checkpoint.step_folder_name(step)
    folder.mkdir(parents=True)
    module = build_model(config.model).state_dict()
    states = {"module": module} if zero_stage == 0 else {
        "module": None, "param_shapes": [{name: tensor.shape for name, tensor in module.items()
                                          if name != "head.weight"}]}
    torch.save(states, folder / "mp_rank_00_model_states.pt")
    checkpoint.write_state(folder, 0, 1, {"run": RunState(step=step).state_dict()})
    stored = config.to_dict()
    stored["model"].update(model_changes)
    (folder / checkpoint.CONFIG).write_text(json.dumps(stored))
    checkpoint.write_marker(folder)
    return folder


def rewrite(path: Path, change) -> None:
    """Damage a checkpoint's file, then rewrite its COMPLETE record to match: a consistent liar."""
    path.write_bytes(change(path.read_bytes()))
    for folder in path.parents:
        if (folder / checkpoint.MARKER).is_file():
            checkpoint.write_marker(folder)
            return


@pytest.mark.parametrize("field, value", LIES[:5])
@pytest.mark.parametrize("command", ["export", "generate", "eval"])
def test_a_checkpoint_config_the_weights_do_not_bear_out_is_one_line(tmp_path, capsys, data, field, value,
                                                                    command):
    folder, out = handmade_checkpoint(tmp_path, **{field: value}), tmp_path / "out.bin"
    refused(capsys, model_commands(folder, out, data["text"])[command], folder, out)


@pytest.mark.parametrize("shape", [[2**40, 64], [10**12], [-1, 64], [2**63 - 1, 2**62]])
def test_param_shapes_that_do_not_fit_the_config_are_one_line(tmp_path, capsys, shape):
    folder = handmade_checkpoint(tmp_path, zero_stage=1)
    states = folder / "mp_rank_00_model_states.pt"
    content = torch.load(states, weights_only=True)
    content["param_shapes"][0]["global_pad"] = torch.Size(shape) if min(shape) >= 0 else shape
    torch.save(content, states)
    checkpoint.write_marker(folder)
    out = tmp_path / "out.safetensors"
    line = refused(capsys, model_commands(folder, out, folder)["export"], states, out)
    assert "global_pad" in line or "param_shapes" in line


@pytest.mark.parametrize("name, change, said", [
    ("mp_rank_00_model_states.pt", lambda data: data[:len(data) // 2], "not a torch.save file"),
    ("mp_rank_00_model_states.pt", lambda data: b"not a zip" * 100, "not a torch.save file"),
    ("config.json", lambda data: b"[1, 2]", "not a config object"),
    ("config.json", lambda data: data.replace(b'"zero_stage": 0', b'"zero_stage": "0"'), "zero_stage"),
    ("config.json", lambda data: re.sub(rb'"micro_batch_size": \d+', b'"micro_batch_size": 0', data),
     "micro_batch_size must be a positive integer, got 0"),
    ("state/rank-00000.safetensors", lambda data: data[:10], "unreadable"),
    ("state/rank-00000.json", lambda data: data[:-5], "unreadable")])
@pytest.mark.parametrize("command", ["export", "generate", "eval"])
def test_a_malformed_file_that_matches_complete_is_one_line(tmp_path, capsys, data, name, change, said,
                                                            command):
    folder, out = handmade_checkpoint(tmp_path), tmp_path / "out.bin"
    rewrite(folder / name, change)
    line = refused(capsys, model_commands(folder, out, data["text"])[command], folder, out)
    assert name in line and said in line


@pytest.mark.parametrize("outside", ["../../../../etc/passwd", "/etc/passwd", "link", "./x/../../COMPLETE"])
def test_complete_names_only_files_inside_its_folder(tmp_path, capsys, outside):
    folder, out = handmade_checkpoint(tmp_path), tmp_path / "out.safetensors"
    secret = tmp_path / "secret"
    secret.write_text("not the checkpoint's\n")
    if outside == "link":
        (folder / "link").symlink_to(secret)
    record = json.loads((folder / checkpoint.MARKER).read_text())
    record["files"][outside] = {"size": secret.stat().st_size, "sha256": checkpoint.file_record(secret)["sha256"]}
    (folder / checkpoint.MARKER).write_text(json.dumps(record))
    line = refused(capsys, ["export", str(folder), "--out", str(out)], folder, out)
    assert f"names {outside!r}, which is not a file inside the checkpoint folder" in line
    assert "21 bytes" not in line  # nothing of the file outside is told


def test_a_latest_pointer_out_of_the_folder_is_ignored(tmp_path):
    root = handmade_checkpoint(tmp_path).parent
    (tmp_path / "step-000009").mkdir()
    (tmp_path / "step-000009" / checkpoint.MARKER).write_text("ok\n")
    (root / checkpoint.LATEST).write_text("../step-000009\n")
    assert checkpoint.latest(root) == root / "step-000001"


# ---------------------------------------------------------------------------------------------
# a resume: the newest checkpoint that is malformed or names files outside is passed over


def malformed_model(folder: Path) -> None:
    rewrite(folder / "mp_rank_00_model_states.pt", lambda data: data[:100])


def hostile_config(folder: Path) -> None:
    def change(data: bytes) -> bytes:
        config = json.loads(data)
        config["data"]["batch_size"] = "8"
        return json.dumps(config).encode()

    rewrite(folder / checkpoint.CONFIG, change)


def names_outside(folder: Path) -> None:
    record = json.loads((folder / checkpoint.MARKER).read_text())
    record["files"]["../step-000001/config.json"] = record["files"][checkpoint.CONFIG]
    (folder / checkpoint.MARKER).write_text(json.dumps(record))


@pytest.mark.parametrize("lie, said", [(malformed_model, "mp_rank_00_model_states.pt: not a torch.save file"),
                                       (hostile_config, "data.batch_size = '8'"),
                                       (names_outside, "names '../step-000001/config.json'")])
def test_a_resume_passes_over_a_checkpoint_that_lies_consistently(tmp_path, capsys, lie, said):
    for step in (1, 2):
        handmade_checkpoint(tmp_path, step=step)
    root = tmp_path / "checkpoints"
    lie(root / "step-000002")
    assert checkpoint.newest_intact(root) == root / "step-000001"
    line = capsys.readouterr().err.strip()
    assert said in line and "moved aside to broken-step-000002; using step-000001" in line, line
    assert sorted(os.listdir(root)) == ["broken-step-000002", "step-000001"]
