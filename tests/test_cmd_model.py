"""`megabyte generate` for image and audio models: the bytes come back as a PNG / WAV of the
training data's format (the model here is untrained: this checks the plumbing, not the art)."""

import json

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from model import MegaByteConfig, build_model
from model.weights import save_weights
from tools.cli import main as cli


def save_model(path, seq_len: int, patch_size: int, **metadata):
    torch.manual_seed(0)
    config = MegaByteConfig(seq_len=seq_len, patch_size=patch_size, global_dim=8 * patch_size,
                            global_layers=1, global_heads=2, local_dim=16, local_layers=1,
                            local_heads=2, dropout=0.0)
    save_weights(build_model(config), path, metadata)


@pytest.mark.parametrize("order", ["raster", "patch"])
def test_image_model_writes_a_png_completing_the_prompt_picture(tmp_path, order, capsys):
    weights = tmp_path / "image.safetensors"
    save_model(weights, seq_len=8 * 8 * 3, patch_size=12, modality="image", image_order=order,
               data_arguments=json.dumps({"size": 8, "resize": "crop"}))
    picture = np.zeros((16, 16, 3), dtype=np.uint8)
    picture[:, :, 0] = 200  # a red square, downsized to 8×8 for the prompt
    Image.fromarray(picture).save(tmp_path / "red.png")
    assert cli(["generate", "--model", str(weights), "--out", str(tmp_path / "out.png"),
                "--prompt-image", str(tmp_path / "red.png"), "--keep", "0.5", "--seed", "1"]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert out.shape == (8, 8, 3)
    # the prompt half survives: raster order keeps the top 4 rows, the patch scan (p = 2) keeps
    # the top 2 rows of 2×2 blocks, i.e. the same top 4 pixel rows
    assert (out[:4, :, 0] == 200).all() and (out[:4, :, 1:] == 0).all()
    assert "8×8 image" in capsys.readouterr().out


def test_image_model_needs_an_output_file(tmp_path, capsys):
    weights = tmp_path / "image.safetensors"
    save_model(weights, seq_len=192, patch_size=12, modality="image",
               data_arguments=json.dumps({"size": 8}))
    assert cli(["generate", "--model", str(weights)]) == 2
    assert "give --out FILE (.png)" in capsys.readouterr().err


@pytest.mark.parametrize("encoding, bytes_per_sample", [("pcm16", 2), ("mulaw8", 1)])
def test_audio_model_writes_a_wav(tmp_path, encoding, bytes_per_sample):
    weights = tmp_path / "audio.safetensors"
    # a context of 64 bytes: the 201 asked for go on past it in a sliding window
    save_model(weights, seq_len=64, patch_size=8, modality="audio",
               data_arguments=json.dumps({"sample_rate": 8000, "encoding": encoding}))
    assert cli(["generate", "--model", str(weights), "--out", str(tmp_path / "out.wav"),
                "--bytes", "201", "--seed", "3"]) == 0
    samples, rate = soundfile.read(tmp_path / "out.wav", dtype="int16")
    assert rate == 8000
    assert len(samples) == 200 // bytes_per_sample if encoding == "pcm16" else len(samples) == 201


@pytest.mark.parametrize("pad_id, exit_code", [(256, 0), (257, 2)])
def test_an_exported_model_must_use_the_datas_vocabulary(tmp_path, capsys, pad_id, exit_code):
    """Files exported before the vocabulary was fixed state its ids in their config: ours load,
    others are refused with one line."""
    from safetensors.torch import save_model as save_tensors

    from model.weights import FORMAT

    config = MegaByteConfig(seq_len=64, patch_size=8, global_dim=64, global_layers=1, global_heads=2,
                            local_dim=16, local_layers=1, local_heads=2)
    stored = {**config.to_dict(), "vocab_size": 258, "pad_id": pad_id, "boundary_id": 257}
    weights = tmp_path / "old.safetensors"
    save_tensors(build_model(config), str(weights), metadata={"format": FORMAT, "config": json.dumps(stored)})
    out = tmp_path / "sample.bin"
    assert cli(["generate", "--model", str(weights), "--bytes", "5", "--out", str(out)]) == exit_code
    err = capsys.readouterr().err.strip().splitlines()
    if exit_code:
        assert len(err) == 1 and "pad_id=257, but the byte vocabulary is fixed" in err[0], err
        assert not out.exists()
    else:
        assert len(out.read_bytes()) == 5


def test_cuda_graphs_are_refused_in_one_line_off_cuda(tmp_path, capsys):
    weights = tmp_path / "text.safetensors"
    save_model(weights, seq_len=64, patch_size=8, modality="text")
    assert cli(["generate", "--model", str(weights), "--device", "cpu", "--cuda-graphs"]) == 2
    assert "--cuda-graphs: needs a CUDA device, and this runs on cpu" in capsys.readouterr().err
    out = tmp_path / "out.txt"
    assert cli(["generate", "--model", str(weights), "--device", "cpu", "--bytes", "20", "--seed", "1",
                "--out", str(out)]) == 0
    assert 0 < len(out.read_bytes()) <= 20
