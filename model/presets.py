"""Model presets: named MegaByteConfigs, from the paper's tables and small ones for tests."""

from model.config import MegaByteConfig


def _transformer(**fields) -> MegaByteConfig:
    return MegaByteConfig(architecture="transformer", patch_size=1, local_layers=0, **fields)


# Presets after the paper's model tables (Table 14/15: width D, layers L, patch size, context).
# The paper gives no head counts: we use 128-wide heads (96 for imagenet64, 64 below width 1024).
# Every preset's parameter count is in PRESET_SIZES beside the size the paper states; where they
# differ by more than 5% the reason is the same: the paper's size names follow GPT-3's, whose counts
# include a 50257-token embedding table (103M at D=2048, 51M at 1024, 39M at 768) where ours has 258
# rows, and for MegaByte the global table is only D_G wide.
PRESETS: dict[str, MegaByteConfig] = {
    # text (PG-19, Books, arXiv...): 8192 bytes, P=8, global 758M (2048 × 14) + local 262M (1024 × 18)
    "text": MegaByteConfig(seq_len=8192, patch_size=8, global_dim=2048, global_layers=14, global_heads=16,
                           local_dim=1024, local_layers=18, local_heads=8),
    # its compute-matched baseline: 320M, D=1024, L=22, 1024-byte context
    "text-transformer": _transformer(seq_len=1024, global_dim=1024, global_layers=22, global_heads=8),
    # ImageNet 64×64 (12288 bytes), P=12: global 2.7B (2560 × 32) + local 350M (1024 × 24). 2560 is
    # not a multiple of P=12 as §2 requires (global width = P·D_G): we take D_G=216, width 2592
    # (+1.25%), 27 heads of 96. No vanilla baseline: the paper compares with published results there.
    "imagenet64": MegaByteConfig(seq_len=12288, patch_size=12, global_dim=2592, global_layers=32, global_heads=27,
                                 local_dim=1024, local_layers=24, local_heads=8),
    # image 256×256 (196608 bytes), P=192 (8×8×3 patch scan): global 125M (768 × 12) + local 125M
    # (768 × 12), so D_G = 768/192 = 4
    "image256": MegaByteConfig(seq_len=196608, patch_size=192, global_dim=768, global_layers=12, global_heads=12,
                               local_dim=768, local_layers=12, local_heads=12),
    # its compute-controlled baseline: 62M, D=768, L=6, 1024-byte context
    "image256-transformer": _transformer(seq_len=1024, global_dim=768, global_layers=6, global_heads=12),
    # raw audio, 524288 bytes (16 s of 16 kHz 16-bit PCM), P=32: global 350M (1024 × 24) + local
    # 125M (768 × 12); the byte position table alone is 524288 × 32 = 16.8M
    "audio": MegaByteConfig(seq_len=524288, patch_size=32, global_dim=1024, global_layers=24, global_heads=8,
                            local_dim=768, local_layers=12, local_heads=12),
    # its baseline: 135M, D=768, L=13, 2048-byte context
    "audio-transformer": _transformer(seq_len=2048, global_dim=768, global_layers=13, global_heads=12),
    # small CPU presets shared by tests, benchmarks and the demo (train in minutes on 2 cores)
    "tiny": MegaByteConfig(seq_len=512, patch_size=8, global_dim=256, global_layers=4, global_heads=4,
                           local_dim=128, local_layers=2, local_heads=4),
    # the baseline from the same blocks at about the same parameter count
    "tiny-transformer": _transformer(seq_len=512, global_dim=256, global_layers=4, global_heads=4),
}

# name: (our parameter count, the paper's stated size or None); tests check ours against the modules.
PRESET_SIZES: dict[str, tuple[int, int | None]] = {
    "text": (934_447_616, 1_020_000_000),  # -8.4%: 758M + 262M are GPT-3-style names (with 50k tables: 1089M)
    "text-transformer": (278_432_768, 320_000_000),  # -13%: 278M + 50257·1024 = 330M
    "imagenet64": (2_886_485_008, 3_050_000_000),  # -5.4%: 2.7B + 350M are GPT-3 names (+129M + 51M tables)
    "image256": (171_102_984, 250_000_000),  # -32%: with two 50257·768 tables it would be 248M
    # -30%: the stated 62M follows from D=768, L=6 under neither counting (42.5M blocks, 81M with a
    # GPT-3 table); we keep the stated D and L
    "image256-transformer": (43_514_112, 62_000_000),
    "audio": (404_378_176, 475_000_000),  # -15%: with 50k tables (51M + 39M) it would be 494M
    "audio-transformer": (93_915_648, 135_000_000),  # -30%: 93.9M + 50257·768 = 132.5M
    "tiny": (3_618_624, None),
    "tiny-transformer": (3_356_928, None),
}
