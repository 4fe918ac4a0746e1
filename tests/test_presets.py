"""Presets: every Table 15 run (and the Table 13 and 9 runs), built on the meta device with its counted parameters, the paper's
model recipe and Table 14's head widths; unknown names are one error line."""

import json

import pytest
import torch

from model import PRESET_SIZES, PRESETS, MegaByteConfig, build_model, byte_loss
from train.config import ConfigError, TrainConfig

# Table 15, row by row (task, model) → preset
TABLE_15 = {
    ("arXiv", "Transformer"): "text-transformer", ("arXiv", "PerceiverAR"): "text-perceiver-ar",
    ("arXiv", "MEGABYTE"): "text", ("arXiv", "w/o local"): "text-no-local",
    ("arXiv", "w/o global"): "text-no-global", ("arXiv", "w/o cross-patch"): "text-no-cross-patch",
    ("arXiv", "w/ CNN"): "text-cnn",
    ("Img64 SOTA", "MEGABYTE"): "imagenet64", ("Img64", "Transformer"): "imagenet64-transformer",
    ("Img64", "PerceiverAR"): "imagenet64-perceiver-ar", ("Img64", "MEGABYTE"): "imagenet64-controlled",
    ("Img256", "Transformer"): "image256-transformer", ("Img256", "PerceiverAR"): "image256-perceiver-ar",
    ("Img256", "MEGABYTE"): "image256", ("Img256", "w/o local"): "image256-no-local",
    ("Img256", "w/o global"): "image256-no-global", ("Img256", "w/o cross-patch"): "image256-no-cross-patch",
    ("Img256", "w/ CNN"): "image256-cnn",
    ("Img640", "Transformer"): "image640-transformer", ("Img640", "PerceiverAR"): "image640-perceiver-ar",
    ("Img640", "MEGABYTE"): "image640",
    ("Audio", "Transformer"): "audio-transformer", ("Audio", "PerceiverAR"): "audio-perceiver-ar",
    ("Audio", "MEGABYTE"): "audio", ("Audio", "w/o local"): "audio-no-local",
    ("Audio", "w/o global"): "audio-no-global", ("Audio", "w/o cross-patch"): "audio-no-cross-patch",
    ("Audio", "w/ CNN"): "audio-cnn",
}
# the runs Tables 13 and 9 size beyond Table 15: the global/local split, and Table 9's transformer
OTHER_TABLES = {
    ("Table 13", "350M / 290M"): "text-split-350m", ("Table 13", "760M / 262M"): "text-split-760m",
    ("Table 13", "1.3B / 218M"): "text-split-1.3b", ("Table 9", "Transformer 350M"): "text-transformer-350m",
}
PAPER_PRESETS = sorted({*TABLE_15.values(), *OTHER_TABLES.values()})
TABLE_14_HEAD_WIDTH = {768: 64, 1024: 64, 1536: 96, 2048: 64, 2560: 80, 4096: 128}
CLASS_OF = {"megabyte": "MegaByte", "transformer": "ByteTransformer", "perceiver_ar": "PerceiverAR",
            "no_local": "NoLocal", "no_global": "NoGlobal"}


def test_every_table_15_row_has_a_preset_and_every_preset_a_size():
    assert len(TABLE_15) == 28 and len(set(TABLE_15.values())) == 28
    assert len(PAPER_PRESETS) == 28 + len(OTHER_TABLES)
    assert set(PAPER_PRESETS) <= set(PRESETS)
    assert set(PRESET_SIZES) == set(PRESETS)
    assert all(PRESET_SIZES[name][1] for name in PAPER_PRESETS)  # the paper's stated size beside ours
    tiny = {name for name in PRESETS if name.startswith("tiny")}
    assert set(PRESETS) == set(PAPER_PRESETS) | tiny
    assert {PRESETS[name].architecture for name in tiny} == set(CLASS_OF)  # a tiny twin of each
    assert any(PRESETS[name].local_cross_patch for name in tiny)
    assert any(PRESETS[name].conv_encoder for name in tiny)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_on_the_meta_device_and_count_their_parameters(name):
    config = PRESETS[name]
    with torch.device("meta"):  # no memory: the paper-sized presets are billions of parameters
        model = build_model(config)
    assert model.num_parameters() == PRESET_SIZES[name][0]
    assert type(model).__name__ == CLASS_OF[config.architecture]
    assert MegaByteConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_follow_the_recipe_and_table_14_heads(name):
    config = PRESETS[name]
    assert (config.activation, config.dropout, config.init_std, config.norm) == ("relu", 0.1, 0.006, "layernorm")
    stacks = []
    if config.global_layers:
        stacks.append((config.global_dim, config.global_heads))
    if config.local_layers:
        stacks.append((config.local_dim, config.local_heads))
    for width, heads in stacks:
        # a width Table 14 prints keeps its head width; one adjusted to a multiple of P keeps one of them
        assert width // heads == TABLE_14_HEAD_WIDTH.get(width, width // heads)
        assert width // heads in TABLE_14_HEAD_WIDTH.values()
    if config.architecture == "megabyte":  # cross-patch attention, but in the ablation without it
        assert config.local_cross_patch == (0 if name.endswith("no-cross-patch") else config.patch_size)


@pytest.mark.parametrize("family", ["tiny", "tiny-image32", "tiny-audio"])
def test_tiny_presets_are_comparable_in_size(family):
    with torch.device("meta"):
        sizes = [build_model(PRESETS[name]).num_parameters() for name in (family, f"{family}-transformer")]
    assert abs(sizes[0] - sizes[1]) / sizes[1] < 0.15


def test_tiny_image32_patches_hold_whole_pixels_of_one_row():
    """32×32 RGB in raster order: a patch is whole pixels (P a multiple of 3) and a row is whole
    patches, and MegaByte and PerceiverAR see the whole image."""
    row_bytes = 32 * 3
    megabyte = PRESETS["tiny-image32"]
    assert megabyte.patch_size % 3 == 0 and row_bytes % megabyte.patch_size == 0
    assert megabyte.seq_len == PRESETS["tiny-image32-perceiver-ar"].seq_len == 32 * row_bytes


@pytest.mark.parametrize("family", ["tiny-image32", "tiny-audio"])
def test_tiny_modality_presets_train_a_step(family):
    """One forward and backward of each architecture at its own context (the meta-device test
    above builds them; this one runs them)."""
    for name in (family, f"{family}-transformer", f"{family}-perceiver-ar"):
        config = PRESETS[name]
        torch.manual_seed(0)
        model = build_model(config)
        ids = torch.randint(0, 256, (1, config.seq_len))
        loss = byte_loss(model(ids), ids)
        loss.backward()
        assert torch.isfinite(loss) and 5.0 < loss.item() < 6.5  # about ln(258) = 5.55 at initialisation
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_an_unknown_preset_is_one_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="'text-large' is not a preset; choose one of .*'text-no-local'"):
        TrainConfig.from_dict({"data": {"datasets": ["d"]}, "model": {"preset": "text-large"}})
