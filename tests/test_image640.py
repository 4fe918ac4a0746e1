"""The shipped 640×640 setting (train/configs/tiny-image640.toml, model/presets.py tiny-image640):
what it reads and trains, and the same config run whole at a small T (16×16 pictures: 768 bytes, four
patches of 192) through `megabyte train` and `megabyte generate` (slow). The million-byte runs
themselves are bench/scaling.py's and the README's, not a test's."""

import pytest
from PIL import Image

from tools.cli import main as cli
from train.config import load_config

import forked
from helpers import ENV, free_port, finish


def test_the_640_config_trains_whole_pictures_in_the_papers_patches_with_checkpointing():
    config = load_config("tiny-image640")
    model, data = config.model, config.data
    assert model.seq_len == 640 * 640 * 3 and model.patch_size == 3 * 8 * 8  # an 8×8-pixel tile
    assert model.global_dim // model.patch_size == 4  # the paper's Img640 D_G = 768 / 192
    assert model.activation_checkpointing and data.image_order == "patch"
    assert data.batch_size == data.micro_batch_size == 1
    assert config.run.checkpoint_every == 1  # steps of minutes: each one kept


@pytest.mark.slow
def test_the_640_config_trains_and_generates_a_whole_picture_at_a_small_size(tmp_path, capsys):
    for split, count in (("train", 6), ("val", 1)):
        (tmp_path / f"{split}-pictures").mkdir()
        for i in range(count):
            colour = (40 * i, 255 - 40 * i, 128)
            Image.new("RGB", (16, 16), colour).save(tmp_path / f"{split}-pictures" / f"{i}.png")
        assert cli(["convert", "image", str(tmp_path / f"{split}-pictures"), "--size", "16",
                    "--out", str(tmp_path / split), "--no-progress"]) == 0
    run_dir = tmp_path / "run"
    overrides = [f'data.datasets=["{tmp_path / "train"}"]', f'data.validation="{tmp_path / "val"}"',
                 "data.num_workers=0", "model.seq_len=768", "optim.total_steps=2", "run.eval_every=2",
                 f'run.out_dir="{run_dir}"']
    trained = finish(forked.start(["-m", "train.main", "--config", "tiny-image640",
                                   *[f"--set={s}" for s in overrides]], ENV, 1, free_port()))
    assert "step 1: " in trained.stderr and "1 steps left, about" in trained.stderr  # the pace line
    picture = tmp_path / "picture.png"
    capsys.readouterr()
    assert cli(["generate", "--model", str(run_dir), "--out", str(picture)]) == 0
    assert capsys.readouterr().out.strip() == f"{picture}: 16×16 image (768 bytes)"
    with Image.open(picture) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
