"""model/flops.py and `megabyte flops`: hand-computed counts, the modules' own matrix products,
the trainer's MFU using the same function, and the Figure 3 plot."""

import dataclasses
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import PRESETS, MegaByteConfig, build_model
from model.flops import count_flops, training_flops_per_byte
from tools.cli import main as cli

V = 258


def by_hand_layer(width: int, keys: int) -> int:
    """One layer at one position, written out: q, k, v and output projections (w×w each), the
    MLP's two matrices (w×4w, 4w×w), scores and weighted sum over `keys`; 2 FLOPs a multiply-add."""
    projections = 4 * 2 * width * width
    mlp = 2 * 2 * width * 4 * width
    attention = 2 * 2 * width * keys
    return projections + mlp + attention


def test_transformer_by_hand():
    config = MegaByteConfig(architecture="transformer", seq_len=6, patch_size=1, global_dim=8, global_layers=2,
                            global_heads=2, local_layers=0)
    layers = sum(2 * by_hand_layer(8, keys=t + 1) for t in range(6))  # position t sees t+1 bytes
    head = 6 * 2 * 8 * V
    flops = count_flops(config)
    assert flops.forward == layers + head == 44544
    assert flops.forward_per_byte == 44544 / 6 and flops.training_per_byte == 3 * 44544 / 6


def test_megabyte_with_cross_patch_attention_by_hand():
    # T=8, P=4: 2 patches; global width 8 (D_G = 2), local width 4, one layer each, r = 2
    config = MegaByteConfig(seq_len=8, patch_size=4, global_dim=8, global_layers=1, global_heads=2,
                            local_dim=4, local_layers=1, local_heads=2, local_cross_patch=2)
    global_ = sum(by_hand_layer(8, keys=k + 1) for k in range(2))  # patch k sees k+1 patches
    hand_off = 8 * 2 * 2 * 4  # every byte: its D_G slice → D_L
    local = sum(by_hand_layer(4, keys=p + 1 + 2) for _ in range(2) for p in range(4))  # + r keys
    head = 8 * 2 * 4 * V
    assert count_flops(config).forward == global_ + hand_off + local + head == 23456


def test_perceiver_ar_by_hand():
    # T=6, N=2 latents at positions 4 and 5, width 8, one decoder layer
    config = MegaByteConfig(architecture="perceiver_ar", seq_len=6, latents=2, patch_size=1, global_dim=8,
                            global_layers=1, global_heads=2, local_layers=0)
    cross = sum(by_hand_layer(8, keys=t + 1) for t in (4, 5)) + 4 * 2 * (2 * 8 * 8)  # + k, v of 4 others
    decoder = sum(by_hand_layer(8, keys=j + 1) for j in range(2))
    head = 2 * 2 * 8 * V
    flops = count_flops(config)
    assert flops.forward == cross + decoder + head == 15872
    assert flops.predicted == 2 and flops.forward_per_byte == 15872 / 2  # only the latents are predicted


def small(name: str):
    """The preset at 64 bytes, or the least multiple of its patch size above (192 for P=12)."""
    config = PRESETS[name]
    seq_len = math.lcm(64, config.patch_size)
    return dataclasses.replace(config, seq_len=seq_len, **({"latents": 16} if config.latents else {}))


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("tiny")))
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_the_count_matches_the_modules_own_products(name, activation):
    """torch's FlopCounterMode counts every matrix product and convolution the model runs (here
    not the attention, whose kernel it does not see on the CPU): our count without attention."""
    config = dataclasses.replace(small(name), activation=activation)
    model = build_model(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, 256, (1, config.seq_len)))
    parts = count_flops(config).parts
    assert counter.get_total_flops() == sum(v for k, v in parts.items() if not k.endswith("attention"))


def test_the_trainer_mfu_uses_the_same_count():
    import train.loop
    import train.metrics

    assert train.loop.training_flops_per_byte is training_flops_per_byte
    assert not hasattr(train.metrics, "flops_per_byte")  # no second count
    assert training_flops_per_byte(PRESETS["text"]) == 3 * count_flops(PRESETS["text"]).forward_per_byte


def test_flops_command_prints_presets_and_configs(capsys):
    from tools.cmd_flops import si

    assert cli(["flops", "tiny", "tiny-perceiver-ar", "tiny-cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "architecture", "parameters", "forward/byte", "training/byte", "attention"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    tiny = count_flops(PRESETS["tiny"])
    assert rows["tiny"][1:5] == ["megabyte", "3.62M", si(tiny.forward_per_byte), si(tiny.training_per_byte)]
    assert rows["tiny-cpu"][1:5] == rows["tiny"][1:5]  # the demo config is the tiny preset
    assert rows["tiny-perceiver-ar"][1] == "perceiver_ar"


def test_flops_of_an_unknown_name_is_one_error_line(capsys):
    assert cli(["flops", "tiny", "text-huge"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1
    assert "text-huge: not a preset or a training config" in err[0] and "text-no-local" in err[0]


def test_figure_3_megabyte_is_cheapest_at_every_length_and_the_plot_is_written(tmp_path, capsys):
    from tools.cmd_flops import FIGURE_3_LENGTHS, figure_3_series

    series = figure_3_series()
    assert len(series) == 9
    for size in range(3):
        transformer, linear, megabyte = (values for _, _, values in series[3 * size: 3 * size + 3])
        assert all(m < min(t, lin) for m, t, lin in zip(megabyte, transformer, linear))
        assert transformer[-1] > 5 * transformer[0]  # quadratic attention dominates at 1M bytes
        assert linear[-1] == linear[0]  # linear attention: the same cost per byte at every length
    assert len(series[0][2]) == len(FIGURE_3_LENGTHS)
    assert cli(["flops", "--plot", str(tmp_path / "fig3.png")]) == 0
    assert (tmp_path / "fig3.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'fig3.png'}: FLOPs per byte")
