"""Model presets: a MegaByteConfig for every run of the paper's Table 15 (and the text runs that
only Tables 13 and 9 size), and small ones for tests.

Names are TASK or TASK-VARIANT:
    tasks     text (the arXiv / PG-19 / Books / Stories / Code runs, one configuration for all),
              imagenet64 (the state-of-the-art run), image256, image640, audio
    variants  transformer, perceiver-ar          the baselines, at the paper's compute budget
              no-local, no-global, no-cross-patch, cnn    the ablations of Table 10
              controlled                         imagenet64's compute-controlled MegaByte (Table 5)
              split-350m, split-760m, split-1.3b    text's global/local split (Table 13)
              transformer-350m                   Table 9's transformer, against split-1.3b
    tiny*     CPU-sized twins of every architecture and option, for tests, benchmarks and the demo
    tiny-image32*, tiny-audio*   CPU-sized MegaByte, transformer and PerceiverAR for 32×32 images
              and 8 kHz audio, for comparisons on real data
    tiny-image64*, tiny-audio16k*   the same three for the paper's 64×64 images and 16 kHz
              16-bit audio, MegaByte in the paper's proportions
    tiny-image640   a MegaByte of the paper's Img640 shape (1,228,800 bytes, P = 192) at CPU width
    text-spacebyte   SpaceByte-793M+184M (Slagle 2024), sized from its reference code
    pg19-*    the SpaceByte paper's best PG-19 models at 10^19 FLOPs (its Table 3): SpaceByte,
              its fixed-patch ablation and its MegaByte
    tiny-spacebyte*  SpaceByte at tiny's FLOPs per byte, and its periodic-patch ablation
    *-wide    a tiny MegaByte at its narrow twin's training FLOPs per byte, but with the paper's
              wide global slice per byte (D_G = global width / P: 256 for text, 213 for
              imagenet64, 32 for audio): one wide global layer in place of four narrow ones

Every paper preset follows the recipe of App. A.1: pre-norm (the only block there is), ReLU,
dropout 0.1 (none on embeddings), truncated-normal initialisation with std 0.006, tied byte
embeddings. Head counts are Table 14's: 64-wide heads at widths 768, 1024 and 2048, 96-wide at
1536, 80-wide at 2560, 128-wide at 4096. Table 15's batch size (BS) and peak learning rate (LR)
are noted beside each run; they belong to the training config (train/configs/), not the model.

MegaByte options the paper uses but does not size: cross-patch attention is on in every MegaByte
run but the "no-cross-patch" ones (that ablation implies the default has it), with r = P (the
whole previous patch), since r is never given.
"""

from model.config import MegaByteConfig

# App. A.1's model recipe, shared by every paper preset
PAPER_RECIPE = dict(activation="relu", dropout=0.1, init_std=0.006, norm="layernorm")


def megabyte(**fields) -> MegaByteConfig:
    """A paper MegaByte run, with cross-patch attention over the whole previous patch."""
    cross_patch = dict(local_cross_patch=fields["patch_size"])
    return MegaByteConfig(architecture="megabyte", **{**PAPER_RECIPE, **cross_patch, **fields})


def baseline(architecture: str, **fields) -> MegaByteConfig:
    """A paper run without a local model or without patches: the global_* fields or local_* fields."""
    off = {"transformer": dict(patch_size=1, local_layers=0),
           "perceiver_ar": dict(patch_size=1, local_layers=0),
           "no_local": dict(local_layers=0),
           "no_global": dict(global_layers=0)}[architecture]
    return MegaByteConfig(architecture=architecture, **{**PAPER_RECIPE, **off, **fields})


PRESETS: dict[str, MegaByteConfig] = {
    # ---- text (Table 15, arXiv rows; the same configuration on every text dataset, Table 2) ----
    # global 758M (2048, 14) + local 262M (1024, 18), 8192 bytes, P=8. BS 48, LR 2e-4
    "text": megabyte(seq_len=8192, patch_size=8, global_dim=2048, global_layers=14, global_heads=32,
                     local_dim=1024, local_layers=18, local_heads=16),
    # 320M (1024, 22), 1024 bytes. BS 72, LR 2e-4
    "text-transformer": baseline("transformer", seq_len=1024, global_dim=1024, global_layers=22, global_heads=16),
    # 248M (1024, 17), 8192 bytes with 1024 latents. BS 72, LR 2e-4
    "text-perceiver-ar": baseline("perceiver_ar", seq_len=8192, latents=1024, global_dim=1024, global_layers=17,
                                  global_heads=16),
    # w/o local model: 2.3B (2560, 20), P=4, so D_G = 640. BS 48, LR 1.5e-4
    "text-no-local": baseline("no_local", seq_len=8192, patch_size=4, global_dim=2560, global_layers=20,
                              global_heads=32),
    # w/o global model: local 350M (1024, 24) over patches of 8. BS 192, LR 2e-4
    "text-no-global": baseline("no_global", seq_len=8192, patch_size=8, local_dim=1024, local_layers=24,
                               local_heads=16),
    # w/o cross-patch attention: 921M (2048, 17) + 350M (1024, 24). BS 48, LR 2e-4
    "text-no-cross-patch": megabyte(seq_len=8192, patch_size=8, global_dim=2048, global_layers=17, global_heads=32,
                                    local_dim=1024, local_layers=24, local_heads=16, local_cross_patch=0),
    # w/ CNN encoder: 704M (2048, 13) + 262M (1024, 18): one global layer fewer pays for the
    # convolutions. BS 48, LR 2e-4
    "text-cnn": megabyte(seq_len=8192, patch_size=8, global_dim=2048, global_layers=13, global_heads=32,
                         local_dim=1024, local_layers=18, local_heads=16, conv_encoder=True),

    # the global/local split of Table 13 (PG-19, compute-matched), P=8, 8192 bytes: global
    # 350M (1024, 24) + local 290M (1024, 20); 760M (1536, 24) + 262M (1024, 18); 1.3B (2048, 24) +
    # 218M (1024, 15), the best, also Table 9's generation model. LR 2e-4 as the text runs
    "text-split-350m": megabyte(seq_len=8192, patch_size=8, global_dim=1024, global_layers=24, global_heads=16,
                                local_dim=1024, local_layers=20, local_heads=16),
    "text-split-760m": megabyte(seq_len=8192, patch_size=8, global_dim=1536, global_layers=24, global_heads=16,
                                local_dim=1024, local_layers=18, local_heads=16),
    "text-split-1.3b": megabyte(seq_len=8192, patch_size=8, global_dim=2048, global_layers=24, global_heads=32,
                                local_dim=1024, local_layers=15, local_heads=16),
    # Table 9's transformer: 350M (1024, 24) with a 1024-byte context, against text-split-1.3b
    "text-transformer-350m": baseline("transformer", seq_len=1024, global_dim=1024, global_layers=24,
                                      global_heads=16),

    # ---- ImageNet 64×64: 12288 bytes per image, P=12 (2×2×3 patch scan) ----
    # state of the art (Table 4): global 2.7B (2560, 32) + local 350M (1024, 24). BS 2, LR 2e-4.
    # P=12 does not divide 2560 (the global width is P·D_G): we take 2640 = 12·220 = 33 heads of
    # 80, the nearest width that keeps Table 14's 80-wide heads (2400 would lose 6%).
    "imagenet64": megabyte(seq_len=12288, patch_size=12, global_dim=2640, global_layers=32, global_heads=33,
                           local_dim=1024, local_layers=24, local_heads=16),
    # compute-controlled comparison (Table 5): global 1.3B (2048, 24) + local 1.3B (2048, 24).
    # BS 256, LR 3e-4. P=12 does not divide 2048: 2112 = 12·176 = 33 heads of 64 (+3%; 1920 -6%).
    "imagenet64-controlled": megabyte(seq_len=12288, patch_size=12, global_dim=2112, global_layers=24,
                                      global_heads=33, local_dim=2048, local_layers=24, local_heads=32),
    # 760M (1536, 24), 2048 bytes. BS 512, LR 3e-4. Table 5's header says a 1024 context for the
    # transformers; we follow Table 15, the per-run table.
    "imagenet64-transformer": baseline("transformer", seq_len=2048, global_dim=1536, global_layers=24,
                                       global_heads=16),
    # 227M (1024, 16), 12288 bytes (the whole image; Table 5's header says 12000) with 1024
    # latents. BS 512, LR 3e-4
    "imagenet64-perceiver-ar": baseline("perceiver_ar", seq_len=12288, latents=1024, global_dim=1024,
                                        global_layers=16, global_heads=16),

    # ---- images 256×256: 196608 bytes, P=192 (8×8×3 patch scan), so D_G = 768/192 = 4 ----
    # global 125M (768, 12) + local 125M (768, 12). BS 16, LR 2e-4
    "image256": megabyte(seq_len=196608, patch_size=192, global_dim=768, global_layers=12, global_heads=12,
                         local_dim=768, local_layers=12, local_heads=12),
    # 62M (768, 6), 1024 bytes. BS 1536, LR 2e-4
    "image256-transformer": baseline("transformer", seq_len=1024, global_dim=768, global_layers=6, global_heads=12),
    # 62M (768, 6), 8192 bytes with 768 latents. BS 256, LR 2e-4
    "image256-perceiver-ar": baseline("perceiver_ar", seq_len=8192, latents=768, global_dim=768, global_layers=6,
                                      global_heads=12),
    # w/o local model: printed "2.7B (4096, 32)", P=48; but (4096, 32) is Table 14's 6.7B and
    # 2.7B is (2560, 32). We take the stated size, as the ablation is compute-matched: by
    # model/flops.py a 4096-wide global model costs 1.71× image256's forward FLOPs per byte (2.49×
    # audio's), 2560 costs 0.70× (1.12×). P=48 does not divide 2560: 2640 = 48·55 = 33 heads of 80.
    # BS 16, LR 2e-4
    "image256-no-local": baseline("no_local", seq_len=196608, patch_size=48, global_dim=2640, global_layers=32,
                                  global_heads=33),
    # w/o global model: local 125M (768, 12) over patches of 192 (the row also lists the removed
    # global model). BS 16, LR 2e-4
    "image256-no-global": baseline("no_global", seq_len=196608, patch_size=192, local_dim=768, local_layers=12,
                                   local_heads=12),
    # w/o cross-patch attention: global "250M" with no D or L given + local 156M (768, 15). The paper
    # matches compute mainly by layer counts (§4.1), so we keep the task's width 768 and take 30
    # layers: 12·30·768² + 50257·768 = 251M under the GPT-3 naming that makes (768, 12) "125M".
    # BS 16, LR 2e-4
    "image256-no-cross-patch": megabyte(seq_len=196608, patch_size=192, global_dim=768, global_layers=30,
                                        global_heads=12, local_dim=768, local_layers=15, local_heads=12,
                                        local_cross_patch=0),
    # w/ CNN encoder: as image256 (the row lists the same sizes). BS 16, LR 2e-4
    "image256-cnn": megabyte(seq_len=196608, patch_size=192, global_dim=768, global_layers=12, global_heads=12,
                             local_dim=768, local_layers=12, local_heads=12, conv_encoder=True),

    # ---- images 640×640: 1228800 bytes, P=192 (6400 patches) ----
    # global 125M (768, 12) + local 83M (768, 8). BS 32, LR 3e-4
    "image640": megabyte(seq_len=1228800, patch_size=192, global_dim=768, global_layers=12, global_heads=12,
                         local_dim=768, local_layers=8, local_heads=12),
    # 83M (768, 8), 1024 bytes. BS 4800, LR 3e-4
    "image640-transformer": baseline("transformer", seq_len=1024, global_dim=768, global_layers=8, global_heads=12),
    # 62M (768, 6), 4096 bytes with 1024 latents. BS 2048, LR 3e-4
    "image640-perceiver-ar": baseline("perceiver_ar", seq_len=4096, latents=1024, global_dim=768, global_layers=6,
                                      global_heads=12),

    # ---- raw audio: 524288 bytes (16.4 s of 16 kHz 16-bit PCM), P=32 ----
    # global 350M (1024, 24) + local 125M (768, 12). BS 256 (the text says 32: we follow Table 15,
    # where every audio MegaByte run has 256), LR 2e-4
    "audio": megabyte(seq_len=524288, patch_size=32, global_dim=1024, global_layers=24, global_heads=16,
                      local_dim=768, local_layers=12, local_heads=12),
    # 135M (768, 13), 1024 bytes. BS 2048, LR 2e-4
    "audio-transformer": baseline("transformer", seq_len=1024, global_dim=768, global_layers=13, global_heads=12),
    # 62M (768, 6), 8192 bytes with 1024 latents. BS 384, LR 2e-4
    "audio-perceiver-ar": baseline("perceiver_ar", seq_len=8192, latents=1024, global_dim=768, global_layers=6,
                                   global_heads=12),
    # w/o local model: printed "2.7B (4096, 32)" as for image256; we take the stated 2.7B =
    # Table 14's (2560, 32) for the same reason; P=32 divides it (D_G = 80). BS 256, LR 2e-4
    "audio-no-local": baseline("no_local", seq_len=524288, patch_size=32, global_dim=2560, global_layers=32,
                               global_heads=32),
    # w/o global model: local 125M (768, 12) over patches of 32. BS 256, LR 2e-4
    "audio-no-global": baseline("no_global", seq_len=524288, patch_size=32, local_dim=768, local_layers=12,
                                local_heads=12),
    # w/o cross-patch attention: 350M (1024, 24) + local 146M (768, 14). BS 256, LR 2e-4
    "audio-no-cross-patch": megabyte(seq_len=524288, patch_size=32, global_dim=1024, global_layers=24,
                                     global_heads=16, local_dim=768, local_layers=14, local_heads=12,
                                     local_cross_patch=0),
    # w/ CNN encoder: as audio. BS 256, LR 2e-4
    "audio-cnn": megabyte(seq_len=524288, patch_size=32, global_dim=1024, global_layers=24, global_heads=16,
                          local_dim=768, local_layers=12, local_heads=12, conv_encoder=True),

    # ---- small CPU presets shared by tests, benchmarks and the demo (minutes on 2 cores) ----
    "tiny": MegaByteConfig(seq_len=512, patch_size=8, global_dim=256, global_layers=4, global_heads=4,
                           local_dim=128, local_layers=2, local_heads=4),
    # the baselines and ablations from the same blocks, at about the same parameter count
    "tiny-transformer": MegaByteConfig(architecture="transformer", seq_len=512, patch_size=1, global_dim=256,
                                       global_layers=4, global_heads=4, local_layers=0),
    "tiny-perceiver-ar": MegaByteConfig(architecture="perceiver_ar", seq_len=512, latents=128, patch_size=1,
                                        global_dim=256, global_layers=4, global_heads=4, local_layers=0),
    "tiny-no-local": MegaByteConfig(architecture="no_local", seq_len=512, patch_size=8, global_dim=256,
                                    global_layers=4, global_heads=4, local_layers=0),
    "tiny-no-global": MegaByteConfig(architecture="no_global", seq_len=512, patch_size=8, global_layers=0,
                                     local_dim=128, local_layers=4, local_heads=4),
    "tiny-cross-patch": MegaByteConfig(seq_len=512, patch_size=8, global_dim=256, global_layers=4, global_heads=4,
                                       local_dim=128, local_layers=2, local_heads=4, local_cross_patch=8),
    "tiny-cnn": MegaByteConfig(seq_len=512, patch_size=8, global_dim=256, global_layers=4, global_heads=4,
                               local_dim=128, local_layers=2, local_heads=4, conv_encoder=True),
    # 32×32 RGB images (3072 bytes, raster order) for comparisons on real photographs. P=12 is
    # four pixels of a row, so a patch never splits a pixel and a row is 8 patches (K=256); the
    # global width must be a multiple of P: 240 = 12·20, 4 heads of 60.
    "tiny-image32": MegaByteConfig(seq_len=3072, patch_size=12, global_dim=240, global_layers=4, global_heads=4,
                                   local_dim=128, local_layers=2, local_heads=4),
    # a third of an image, as the paper's image transformers see a fraction of theirs: full
    # attention over 3072 bytes is ~10× slower per step on a CPU
    "tiny-image32-transformer": MegaByteConfig(architecture="transformer", seq_len=1024, patch_size=1,
                                               global_dim=256, global_layers=4, global_heads=4, local_layers=0),
    # the whole image, predicting its last 256 bytes (imagenet64-perceiver-ar's 1 in 12)
    "tiny-image32-perceiver-ar": MegaByteConfig(architecture="perceiver_ar", seq_len=3072, latents=256,
                                                patch_size=1, global_dim=256, global_layers=4, global_heads=4,
                                                local_layers=0),
    # audio: 8192 bytes (1 s of 8 kHz µ-law, 0.26 s of 16 kHz 16-bit PCM), P=32 as the paper's
    # audio runs, so K=256 and D_G = 256/32 = 8
    "tiny-audio": MegaByteConfig(seq_len=8192, patch_size=32, global_dim=256, global_layers=4, global_heads=4,
                                 local_dim=128, local_layers=2, local_heads=4),
    # 1024 bytes, as audio-transformer
    "tiny-audio-transformer": MegaByteConfig(architecture="transformer", seq_len=1024, patch_size=1,
                                             global_dim=256, global_layers=4, global_heads=4, local_layers=0),
    # 8192 bytes with 1024 latents, as audio-perceiver-ar; larger than its twins only by the
    # 8192-row position table (2.1M parameters, no compute)
    "tiny-audio-perceiver-ar": MegaByteConfig(architecture="perceiver_ar", seq_len=8192, latents=1024,
                                              patch_size=1, global_dim=256, global_layers=4, global_heads=4,
                                              local_layers=0),

    # ---- tiny MegaByte in the paper's proportions (D_G = global_dim / P) ----
    # The narrow tiny presets give a byte 32 (tiny), 20 (tiny-image32) and 8 (tiny-audio) global
    # dimensions. These twins widen the global model to the paper's D_G range at the twin's
    # training FLOPs per byte (model/flops.py): a layer of width P·D_G costs (P·D_G)²/P per byte,
    # so one wide layer replaces four narrow ones, and the local model narrows where that is not
    # enough. Most parameters then sit in the global model, as in every paper run.
    # D_G = 64: one 512-wide global layer (8 heads of 64) for tiny's four 256-wide ones; the same
    # local model. 3.64M parameters, 5.01M training FLOPs per byte (tiny: 5.01M)
    "tiny-wide": MegaByteConfig(seq_len=512, patch_size=8, global_dim=512, global_layers=1, global_heads=8,
                                local_dim=128, local_layers=2, local_heads=4),
    # D_G = 64: one 768-wide global layer (12 heads of 64) for four 240-wide ones, and a local model
    # of width 64 (2 heads) for 128. 7.42M parameters, 4.36M training FLOPs per byte (tiny-image32:
    # 4.10M, +6%)
    "tiny-image32-wide": MegaByteConfig(seq_len=3072, patch_size=12, global_dim=768, global_layers=1,
                                        global_heads=12, local_dim=64, local_layers=2, local_heads=2),
    # D_G = 32, the paper's audio proportion (audio: 1024 / 32). D_G = 64 at P = 32 would be a
    # 2048-wide global model, whose one layer costs 3× tiny-audio's whole budget per byte (and holds
    # 50M parameters). One 1024-wide global layer (16 heads of 64) for four 256-wide ones, a local
    # model of width 64 (2 heads). 12.99M parameters, 3.13M training FLOPs per byte (tiny-audio:
    # 3.25M, -4%)
    "tiny-audio-wide": MegaByteConfig(seq_len=8192, patch_size=32, global_dim=1024, global_layers=1,
                                      global_heads=16, local_dim=64, local_layers=2, local_heads=2),

    # ---- 64×64 RGB images (12,288 bytes) and 16 kHz 16-bit audio: the paper's settings, tiny ----
    # Table 15's Img64 MEGABYTE row (12,288 bytes, P = 12, the whole image in context), at
    # tiny-image32-wide's widths: D_G = 64. The paper's is 2048 / 12 ≈ 171 (213 in the SOTA run)
    # with 24 global and 24 local layers; here one global layer of 768 and two local of 64.
    # 8.01M parameters (0.79M of them the 12,288-row position table), 4.66M training FLOPs per byte
    "tiny-image64": MegaByteConfig(seq_len=12288, patch_size=12, global_dim=768, global_layers=1, global_heads=12,
                                   local_dim=64, local_layers=2, local_heads=2),
    # Table 15's Img64 Transformer row: 2,048-byte segments (a sixth of an image); 256 wide and 4
    # layers for (1536, 24). 3.75M parameters, 31.9M training FLOPs per byte
    "tiny-image64-transformer": MegaByteConfig(architecture="transformer", seq_len=2048, patch_size=1,
                                               global_dim=256, global_layers=4, global_heads=4, local_layers=0),
    # Table 15's Img64 PerceiverAR row: the whole image (12,288 bytes) with 1,024 latents; 256 wide
    # and 4 layers for (1024, 16). 7.16M parameters (3.1M the position table), 75.1M training FLOPs
    # per byte, most of them the cross-attention over 11,264 positions
    "tiny-image64-perceiver-ar": MegaByteConfig(architecture="perceiver_ar", seq_len=12288, latents=1024,
                                                patch_size=1, global_dim=256, global_layers=4, global_heads=4,
                                                local_layers=0),
    # Table 15's Audio MEGABYTE row (P = 32, D_G = 1024 / 32 = 32) over 16,384 bytes: 0.51 s of
    # 16 kHz 16-bit PCM (the paper's 524,288 bytes are 16.4 s). tiny-audio-wide's widths: one
    # global layer of 1024 (the paper's width, 24 layers there) and two local of 64 (768 × 12
    # there); K = 512 patches. 13.25M parameters, 12.6M of them in the global layer, 3.18M training
    # FLOPs per byte
    "tiny-audio16k": MegaByteConfig(seq_len=16384, patch_size=32, global_dim=1024, global_layers=1,
                                    global_heads=16, local_dim=64, local_layers=2, local_heads=2),
    # Table 15's Audio PerceiverAR row has 8,192 bytes with 1,024 latents; here MegaByte's 16,384
    # bytes, so both see the same context. 256 wide and 4 layers for (768, 6). 8.21M parameters
    # (4.2M the position table), 90.8M training FLOPs per byte
    "tiny-audio16k-perceiver-ar": MegaByteConfig(architecture="perceiver_ar", seq_len=16384, latents=1024,
                                                 patch_size=1, global_dim=256, global_layers=4, global_heads=4,
                                                 local_layers=0),

    # ---- 640×640 RGB images (1,228,800 bytes): the paper's million-byte sequence on one machine ----
    # Table 15's Img640 MEGABYTE row (P = 192, an 8×8-pixel tile in the patch scan, K = 6,400
    # patches, global width 768 so D_G = 4) with 2 global layers for 12 and a local model of
    # 128 × 2 for 768 × 8. 19.52M parameters (14.18M in the global model, 4.92M of them its
    # 6,400-row position table), 3.61M training FLOPs per byte. Train it with activation
    # checkpointing (train/configs/tiny-image640.toml): BENCHMARKS.md "Long sequences" has the cost.
    "tiny-image640": MegaByteConfig(seq_len=1228800, patch_size=192, global_dim=768, global_layers=2,
                                    global_heads=12, local_dim=128, local_layers=2, local_heads=2),

    # ---- SpaceByte (Slagle 2024, arXiv 2404.14408; model/spacebyte.py) ----
    # SpaceByte-793M+184M, the paper's largest run (PG-19, Stories, arXiv, Github), sized from the
    # reference code's reproduce/README.md: context 8192, global 1536 × 28 (12·28·1536² = 793M),
    # local 768 × 26 (184M; 13 blocks before the global ones, 13 after), T_G = 1344, W = 768,
    # 64-wide heads (its d_key). Its recipe as the reference's defaults: ReLU, no dropout,
    # LayerNorm, byte embeddings not tied (tie_embedding is on only with a tokenizer). Where ours
    # differs: the reference adds rotary positions and a LayerNorm on queries and keys (neither
    # exists here) to its learned positions, and initialises otherwise (std 0.02 here). Batch 64,
    # 30B bytes (train/configs/, not the model).
    "text-spacebyte": MegaByteConfig(architecture="spacebyte", seq_len=8192, patch_size=1, global_dim=1536,
                                     global_layers=28, global_heads=24, local_dim=768, local_layers=26,
                                     local_heads=12, global_len=1344, local_window=768, activation="relu",
                                     dropout=0.0, tie_embeddings=False),
    # The SpaceByte paper's best PG-19 (and arXiv) models at 10^19 training FLOPs (its Table 3, from
    # the grid of its App. B.3): T_G = D = 1024 global positions, W = D_local, L_global = L_local =
    # 16, 64-wide heads, the reference's recipe as text-spacebyte's (AdamW β2 0.98, batch 64, lr
    # 0.005/√64 = 6.25e-4 with 1% warm-up: train/configs/). Its forward FLOPs per byte by our count
    # (model/flops.py), against its Table 3: spacebyte 190M (196M), fixed P 335M (343M), MegaByte
    # 210M (219M); it counts the same matmuls and adds what ours leaves out (its rotary and q/k norms).
    # Its MegaByte is P = 4 ("P = 4 was often better in our setup"), T = P·D, no cross-patch
    # attention: not the MegaByte paper's P = 8. Its Table 1 (PG-19 bits per byte at 10^19): MegaByte
    # 1.083, SpaceByte (fixed P) 1.112, SpaceByte 1.009, byte Transformer 1.138.
    # 256M parameters (201M + 50M in the paper's count, which leaves out embeddings and positions)
    "pg19-spacebyte": MegaByteConfig(architecture="spacebyte", seq_len=6144, patch_size=1, global_dim=1024,
                                     global_layers=16, global_heads=16, local_dim=512, local_layers=16,
                                     local_heads=8, global_len=1024, local_window=512, activation="relu",
                                     dropout=0.0, tie_embeddings=False),
    # fixed patches of P = 6 over the same T: its best has D_local = 768 (201M + 113M); 321M here
    "pg19-spacebyte-periodic": MegaByteConfig(architecture="spacebyte", seq_len=6144, patch_size=6,
                                              patching="periodic", global_dim=1024, global_layers=16,
                                              global_heads=16, local_dim=768, local_layers=16, local_heads=12,
                                              global_len=1024, local_window=768, activation="relu", dropout=0.0,
                                              tie_embeddings=False),
    # its MegaByte: global 1024 × 16 over K = 1024 patches of P = 4 (D_G = 256), local 512 × 16; 253M here
    "pg19-megabyte": MegaByteConfig(seq_len=4096, patch_size=4, global_dim=1024, global_layers=16, global_heads=16,
                                    local_dim=512, local_layers=16, local_heads=8, activation="relu", dropout=0.0,
                                    tie_embeddings=False),
    # tiny's budget: global 256 × 3 over T_G = 512/6 = 85 boundaries, local 128 × 2 (one block
    # either side) with the reference's window W = D_L = 128. 2.89M parameters, 5.32M training
    # FLOPs per byte (tiny: 5.01M, +6%)
    "tiny-spacebyte": MegaByteConfig(architecture="spacebyte", seq_len=512, patch_size=1, global_dim=256,
                                     global_layers=3, global_heads=4, local_dim=128, local_layers=2, local_heads=4),
    # the paper's ablation at the same sizes: a boundary every 8 bytes, T_G = 64 (tiny's K).
    # 2.88M parameters, 4.71M training FLOPs per byte (tiny: 5.01M, -6%)
    "tiny-spacebyte-periodic": MegaByteConfig(architecture="spacebyte", seq_len=512, patch_size=8, patching="periodic",
                                              global_dim=256, global_layers=3, global_heads=4, local_dim=128,
                                              local_layers=2, local_heads=4),
}
# Table 15's Audio Transformer row: 1,024 bytes (32 ms of 16 kHz 16-bit PCM, as the paper's), 256
# wide and 4 layers for (768, 13): tiny-audio-transformer itself, named for the 16 kHz family.
# 3.49M parameters, 25.6M training FLOPs per byte
PRESETS["tiny-audio16k-transformer"] = PRESETS["tiny-audio-transformer"]
