"""`megabyte flops`: FLOPs per byte of presets and training configs, and the paper's Figure 3.

    megabyte flops                          every preset
    megabyte flops text audio my.toml       presets or training configs (files or shipped names)
    megabyte flops --plot fig3.png          FLOPs per byte against sequence length (Figure 3)

The counts come from model/flops.py, the same function the trainer's MFU divides by.
"""

from pathlib import Path

from pipeline.format.errors import UsageError

# Figure 3's models (§3). The paper gives parameter counts only: GPT-3-style transformers of 660M
# to 173B and MegaByte with P=8 at 452M/151M, 5.8B/604M and 170B/3.2B (global/local). We pick the
# depth and width that give each count as 12·L·D² (a block's parameters at MLP ratio 4); the three
# transformers are GPT-3's 760M (24, 1536), 6.7B (32, 4096) and 175B (96, 12288) shapes, whose
# blocks hold 0.68B, 6.4B and 174B, beside MegaByte's totals of 0.60B, 6.4B and 173B.
FIGURE_3 = [  # (transformer (L, D), MegaByte global (L, D), MegaByte local (L, D))
    ((24, 1536), (16, 1536), (12, 1024)),
    ((32, 4096), (24, 4480), (12, 2048)),
    ((96, 12288), (94, 12288), (16, 4096)),
]
FIGURE_3_LENGTHS = [2 ** n for n in range(10, 21)]  # 1K to 1M bytes
FIGURE_3_PATCH = 8


def register(subparsers) -> None:
    flops = subparsers.add_parser("flops", help="FLOPs per byte of presets or configs; the paper's Figure 3")
    flops.add_argument("names", nargs="*", metavar="NAME",
                       help="a preset (see model/presets.py) or a training config, a TOML file or a "
                            "shipped name (default: every preset, unless --plot is given alone)")
    flops.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                       help="also draw FLOPs per byte against sequence length for a transformer, a "
                            "linear-attention transformer and MegaByte, as the paper's Figure 3")
    flops.set_defaults(func=cmd_flops)


def resolve_model(name: str):
    """A preset name, or a training config (file or shipped name) → its MegaByteConfig."""
    from model import PRESETS
    from train.config import ConfigError, load_config

    if name in PRESETS:
        return PRESETS[name]
    try:
        return load_config(name).model
    except ConfigError as error:
        if Path(name).is_file():
            raise
        raise UsageError(f"{name}: not a preset or a training config ({error}); presets: "
                         f"{', '.join(PRESETS)}") from None


def flops_rows(names: list[str]) -> list[tuple]:
    """(name, architecture, parameters, forward FLOPs/byte, training FLOPs/byte, attention share)."""
    import torch

    from model import build_model
    from model.flops import count_flops

    rows = []
    for name in names:
        config = resolve_model(name)
        with torch.device("meta"):  # counts without memory, even for billions of parameters
            parameters = build_model(config).num_parameters()
        flops = count_flops(config)
        attention = sum(v for k, v in flops.parts.items() if k.endswith("attention")) / flops.forward
        rows.append((name, config.architecture, parameters, flops.forward_per_byte, flops.training_per_byte,
                     attention))
    return rows


def si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def figure_3_series() -> list[tuple[str, str, list[float]]]:
    """(label, style, FLOPs per byte at each of FIGURE_3_LENGTHS) for every line of Figure 3."""
    from model import MegaByteConfig
    from model.flops import count_flops

    def transformer(T, layers, dim):
        return MegaByteConfig(architecture="transformer", seq_len=T, patch_size=1, global_dim=dim,
                              global_layers=layers, global_heads=dim // 64, local_layers=0)

    def megabyte(T, global_, local):
        return MegaByteConfig(seq_len=T, patch_size=FIGURE_3_PATCH, global_layers=global_[0], global_dim=global_[1],
                              global_heads=global_[1] // 64, local_layers=local[0], local_dim=local[1],
                              local_heads=local[1] // 64)

    def size(*stacks):
        return si(sum(12 * layers * dim * dim for layers, dim in stacks))

    series = []
    for base, global_, local in FIGURE_3:
        per_length = [(transformer(T, *base), megabyte(T, global_, local)) for T in FIGURE_3_LENGTHS]
        series += [
            (f"Transformer {size(base)}", "-", [count_flops(t).forward_per_byte for t, _ in per_length]),
            (f"Linear Transformer {size(base)}", "--",
             [count_flops(t, linear_attention=True).forward_per_byte for t, _ in per_length]),
            (f"MegaByte {size(global_)}/{size(local)}", ":", [count_flops(m).forward_per_byte for _, m in per_length]),
        ]
    return series


def plot_figure_3(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 6))
    colours = ["tab:blue", "tab:orange", "tab:green"]
    for i, (label, style, values) in enumerate(figure_3_series()):
        axes.plot(FIGURE_3_LENGTHS, values, style, color=colours[i // 3], label=label)
    axes.set(xscale="log", yscale="log", xlabel="sequence length (bytes)", ylabel="forward FLOPs per byte",
             title=f"FLOPs per byte (as the paper's Figure 3; MegaByte P={FIGURE_3_PATCH})")
    axes.set_xticks(FIGURE_3_LENGTHS[::2], [f"{T >> 10}K" if T < 1 << 20 else f"{T >> 20}M"
                                            for T in FIGURE_3_LENGTHS[::2]])
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def cmd_flops(args) -> int:
    from model import PRESETS

    names = args.names or ([] if args.plot else list(PRESETS))
    rows = flops_rows(names)
    if rows:
        width = max(len(row[0]) for row in rows)
        print(f"{'name':<{width}}  {'architecture':<13} {'parameters':>10} {'forward/byte':>12} "
              f"{'training/byte':>13} {'attention':>9}")
        for name, architecture, parameters, forward, training, attention in rows:
            print(f"{name:<{width}}  {architecture:<13} {si(parameters):>10} {si(forward):>12} "
                  f"{si(training):>13} {attention:>9.1%}")
    if args.plot:
        print(f"{plot_figure_3(args.plot)}: FLOPs per byte against sequence length (Figure 3)")
    return 0
