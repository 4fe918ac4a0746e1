"""SpaceByte (model/spacebyte.py) on text: word boundaries on UTF-8, periodic patches, the targets
past T_G global positions, causality and cached generation against recomputation on text-like bytes,
config errors, FLOPs, and training. tests/test_model_family.py runs it with the other architectures
on random bytes (causality, cached decoding, windows past the context, bf16, activation
checkpointing, weights files)."""

import pytest
import torch
import torch.nn as nn

from model import PRESETS, MegaByteConfig, build_model, byte_loss, generate_ids
from model.config import BOUNDARY_ID, PAD_ID
from model.flops import count_flops, training_flops_per_byte
from model.attention import matmul_attention, sliding_window_attention
from model.spacebyte import word_boundaries

from generation_reference import reference_ids

T = 32
SMALL = dict(architecture="spacebyte", seq_len=T, patch_size=1, global_dim=32, global_layers=2, global_heads=2,
             local_dim=16, local_layers=2, local_heads=2, dropout=0.0)
VARIANTS = {  # name → config fields on top of SMALL
    "spacelike": dict(local_window=4, global_len=8),
    "few-slots": dict(local_window=3, global_len=3),  # most rows run out of global positions
    "three-local": dict(local_window=5, local_layers=3),  # 1 block before the global ones, 2 after
    "periodic": dict(patch_size=4, patching="periodic", local_window=4),
    "no-positions": dict(local_window=4, global_len=6, pos_embedding="none"),
}
ALPHABET = torch.tensor(list(b"ab1 .,\n") + [0xC3, 0xA9, BOUNDARY_ID])  # letters, spaces, UTF-8, the boundary


def text_ids(rows: int, length: int, seed: int) -> torch.Tensor:
    """Random text-like ids (rows, length): words, spaces, punctuation, é, document boundaries."""
    generator = torch.Generator().manual_seed(seed)
    return ALPHABET[torch.randint(0, len(ALPHABET), (rows, length), generator=generator)]


def variant_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    # float64 so that cached and full computations cannot split a near-tie differently
    return build_model(MegaByteConfig(**{**SMALL, **VARIANTS[name]})).double().eval()


def boundaries_of(text: bytes) -> list[int]:
    return word_boundaries(torch.tensor([list(text)]))[0].nonzero()[:, 0].tolist()


def test_word_boundaries_on_utf8_text():
    # a boundary is a spacelike byte after one that is not: "," and " " after letters, "?"; a
    # multi-byte character's lead byte is spacelike (its continuation bytes are not), so the
    # second of two CJK characters starts a patch, and "é" after a letter does
    assert boundaries_of(b"Hi, \xc3\xa7a va?\n\xe6\x97\xa5\xe6\x9c\xac") == [2, 7, 10, 15]
    assert boundaries_of("café au".encode()) == [3, 5]
    assert boundaries_of(b"x=42; y") == [1, 4]  # digits are word bytes
    assert boundaries_of(b" a") == [0]  # the first byte has nothing before it
    assert boundaries_of(b"\tZz~\x7f\x80") == [0, 3]  # 0x80 is a continuation byte
    ids = torch.tensor([[BOUNDARY_ID, BOUNDARY_ID, 65, BOUNDARY_ID]])
    assert word_boundaries(ids)[0].tolist() == [True, True, False, True]  # the document boundary always is


def test_the_global_blocks_run_at_the_position_that_reads_the_boundary_byte():
    """Input position t reads byte t-1: for "ab cd" the space (byte 2) is read at position 3,
    whose output predicts "c"; periodic patches start at positions 0, P, 2P, ..."""
    model = variant_model("spacelike")
    ids = torch.tensor([list(b"ab cd. e")])
    assert model.boundaries(ids)[0].nonzero()[:, 0].tolist() == [3, 6]  # " " and "." (" " after "." is none)
    periodic = variant_model("periodic")
    assert periodic.boundaries(ids[:, :7])[0].nonzero()[:, 0].tolist() == [0, 4]


def test_targets_past_the_global_positions_are_not_trained():
    """global_len = 2: the third boundary (position 6, reading byte 5) and everything after it get
    no global output; those targets are left out of the loss and counted in untrained_fraction."""
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, "global_len": 2})).double()
    ids = torch.tensor([list(b"a b c d e f g h ")])  # boundaries: bytes 1, 3, 5, ... read at 2, 4, 6, ...
    loss, targets = model(ids, loss=True)
    assert targets == 6 and model.untrained_fraction == pytest.approx(10 / 16)
    logits = model(ids)
    # both losses take the softmax in fp32 (model/loss.py), in another order: fp32's precision
    torch.testing.assert_close(loss, byte_loss(logits[:, :6], ids[:, :6]), rtol=1e-6, atol=0)
    ids[0, 12:] = PAD_ID  # PAD targets are not counted in the fraction either
    model(ids)
    assert model.untrained_fraction == pytest.approx(6 / 12)
    assert model(ids[:, :5], loss=True)[1] == 5 and model.untrained_fraction == 0  # two boundaries: all trained


def test_periodic_patching_trains_every_target_and_counts_t_over_p_positions():
    model = variant_model("periodic")
    assert model.config.global_length == T // 4
    ids = text_ids(2, T, 0)
    assert model(ids, loss=True)[1] == 2 * T and model.untrained_fraction == 0
    assert model.boundaries(ids[:, :-1]).sum(dim=1).tolist() == [T // 4, T // 4]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_changing_byte_t_changes_no_prediction_up_to_t_and_reaches_the_next_one(name):
    model = variant_model(name)
    ids = text_ids(2, T, 1)
    logits = model(ids)
    assert logits.shape == (2, T, model.config.vocab_size)
    for t in (0, 1, 3, 4, 7, T // 2, T - 5, T - 2, T - 1):
        changed = ids.clone()
        changed[:, t] = torch.where(changed[:, t] == ord(" "), ord("a"), ord(" "))  # boundaries move
        difference = (model(changed) - logits).abs().amax(dim=(0, 2))  # (T,)
        assert difference[: t + 1].max() < 1e-9, f"byte {t} changed a prediction before byte {t + 1}"
        if t + 1 < T:
            assert difference[t + 1] > 1e-4, f"byte {t} does not reach byte {t + 1}"


def test_the_global_model_carries_a_byte_past_the_local_window():
    """W = 2 and one local block either side: locally, byte 0 reaches at most position 3. Through
    the global model (byte 1 is a space, so position 2 is a boundary) it reaches position 30, whose
    window holds the boundary at 29 (reading the space at byte 28)."""
    model = build_model(MegaByteConfig(**{**SMALL, "local_window": 2, "global_len": 16})).double()
    ids = torch.tensor([list(b"x yy zz ww vv uu tt ss rr qq pp ")])
    changed = ids.clone()
    changed[0, 0] = ord("k")
    difference = (model(changed) - model(ids))[0].abs().amax(dim=-1)  # (T,)
    assert difference[30] > 1e-6 and difference[31] == 0  # 31 sees positions 30 and 31 only


@pytest.mark.parametrize("T, W", [(12, 4), (13, 4), (5, 4), (4, 4), (9, 1), (30, 7)])
@pytest.mark.parametrize("attend", [None, matmul_attention])
def test_sliding_window_attention_in_blocks_equals_the_band_mask(T, W, attend):
    """Blocks of W positions, each reading its own and the previous block: the values and gradients
    of attention over all T keys with a band mask (a query sees its position and the W - 1 before),
    whether or not W divides T."""
    generator = torch.Generator().manual_seed(T * W)
    q, k, v = (torch.randn(2, 3, T, 5, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ones = torch.ones(T, T, dtype=torch.bool)
    band = ones.tril() & ~ones.tril(diagonal=-W)  # (T, T)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band)
    blocked = sliding_window_attention(q, k, v, W, attend)
    assert blocked.shape == reference.shape
    torch.testing.assert_close(blocked, reference)
    weights = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    for got, want in zip(torch.autograd.grad((blocked * weights).sum(), (q, k, v)), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("prompt_len", [0, 13])
def test_cached_decoding_gives_the_logits_of_the_full_forward(name, prompt_len):
    """prefill, then decode_step fed the true bytes: every step equals the whole forward over the
    bytes so far, with rows that reach their boundaries (and run out of global slots) apart."""
    model = variant_model(name)
    ids = text_ids(2, T, prompt_len)
    logits, state = model.prefill(ids[:, :prompt_len], T)
    for t in range(prompt_len, T):  # logits predicts byte t
        full = model(ids[:, : t + 1])[:, -1]
        torch.testing.assert_close(logits, full, rtol=0, atol=1e-9, msg=lambda m: f"byte {t}: {m}")
        if t < T - 1:
            logits = model.decode_step(ids[:, t], state)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("prompt_len", [5, 45])
@pytest.mark.parametrize("temperature", [0, 1])
def test_cached_generation_equals_recomputation_past_the_context_and_the_global_positions(name, prompt_len,
                                                                                         temperature):
    """Every byte is predicted with the global model's output: the window slides when it is full,
    and when it holds more boundaries than T_G (sampled bytes are mostly spacelike), to fewer bytes
    if need be. Greedy bytes of an untrained model repeat, so sampling tests the slides mid-way."""
    model = variant_model(name)
    prompt = text_ids(2, prompt_len, prompt_len)
    out = generate_ids(model, prompt, 2 * T, temperature=temperature, stop_at_boundary=False,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, reference_ids(model, prompt, 2 * T, temperature=temperature))


@pytest.mark.parametrize("fields, message", [
    (dict(global_len=T + 1), "global_len=33: spacebyte's global positions must be 1 to seq_len=32"),
    (dict(global_len=-1), "global_len=-1"),
    (dict(local_window=-1), "local_window=-1: the window must be at least 1 byte"),
    (dict(patching="words"), "patching must be one of ('spacelike', 'periodic')"),
    (dict(patch_size=4), "spacelike patches have no fixed size: set patch_size=1"),
    (dict(patch_size=4, patching="periodic", global_len=4), "periodic patching has 8 patches"),
    (dict(global_dim=8, global_heads=2), "global_dim=8 must be at least local_dim"),
    (dict(local_layers=0), "spacebyte needs local_layers >= 1"),
    (dict(global_heads=3), "global_heads=3 must divide global_dim=32"),
    (dict(local_cross_patch=1), "local_cross_patch is a megabyte option"),
    (dict(latents=4), "latents is a perceiver_ar field"),
    (dict(conv_encoder=True), "conv_encoder is an option of megabyte and no_local"),
    (dict(local_attention="matmul"), "sliding window over all T bytes, run by sdpa"),
    (dict(architecture="megabyte", patch_size=4, global_len=8),
     "global_len, local_window and patching are spacebyte fields"),
    (dict(architecture="transformer", local_layers=0, patching="periodic"),
     "set global_len=0, local_window=0, patching=\"spacelike\" for transformer"),
])
def test_bad_configs_are_one_line_errors(fields, message):
    with pytest.raises(ValueError) as error:
        MegaByteConfig(**{**SMALL, **fields})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_defaults_are_the_references():
    config = MegaByteConfig(**SMALL)
    assert (config.global_length, config.window) == (T // 6, 16)  # T/6 and D_L
    assert MegaByteConfig(**{**SMALL, **VARIANTS["periodic"]}).global_length == T // 4


def test_spacelike_patches_refuse_image_and_audio_and_name_periodic():
    config = MegaByteConfig(**SMALL)
    config.check_modality("text")
    for modality in ("image", "audio"):
        with pytest.raises(ValueError, match='set patching="periodic"') as error:
            config.check_modality(modality)
        assert "\n" not in str(error.value)
    MegaByteConfig(**{**SMALL, **VARIANTS["periodic"]}).check_modality("image")
    PRESETS["tiny"].check_modality("audio")  # the other architectures read anything


def test_flops_by_hand():
    # T = 8, W = 3, T_G = 2; local width 4 (one block either side), global width 8 (one block)
    config = MegaByteConfig(architecture="spacebyte", seq_len=8, patch_size=1, global_dim=8, global_layers=1,
                            global_heads=2, local_dim=4, local_layers=2, local_heads=2, global_len=2, local_window=3)

    def layer(width, keys):  # projections, MLP ×4, attention scores and sum, 2 FLOPs a multiply-add
        return 2 * 4 * width * width + 2 * 2 * width * 4 * width + 2 * 2 * width * keys

    local = 2 * sum(layer(4, min(t + 1, 3)) for t in range(8))
    global_ = sum(layer(8, s + 1) for s in range(2))
    head = 8 * 2 * 4 * 258
    assert count_flops(config).forward == local + global_ + head


def test_tiny_spacebyte_costs_tinys_flops_per_byte():
    assert PRESETS["tiny-spacebyte"].seq_len == PRESETS["tiny"].seq_len == 512
    for name in ("tiny-spacebyte", "tiny-spacebyte-periodic"):
        ratio = training_flops_per_byte(PRESETS[name]) / training_flops_per_byte(PRESETS["tiny"])
        assert 0.9 <= ratio <= 1.1, name


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **VARIANTS["spacelike"], "dropout": 0.1}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.tensor([list(b"the cat sat on the mat. " * 2)[:T]] * 4)
    losses = []
    for _ in range(8):
        loss, _ = model(ids, loss=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert losses[-1] < losses[0] - 0.5


def test_the_pg19_config_buys_the_papers_budget_with_its_recipe():
    """train/configs/pg19-spacebyte.toml: 10^19 training FLOPs at batch 64, the reference's optimizer
    settings, the rate at 0 after the last step."""
    from train.config import load_config
    from train.engine import lr_factor

    config = load_config("pg19-spacebyte")
    optim = config.optim
    flops = training_flops_per_byte(config.model) * config.data.batch_size * config.model.seq_len * optim.total_steps
    assert flops == pytest.approx(1e19, rel=1e-4)
    assert (optim.betas, optim.weight_decay, optim.grad_clip, optim.lr) == ([0.9, 0.98], 0.01, 1.0, 0.005 / 64**0.5)
    assert optim.warmup_steps == round(optim.total_steps / 100) and lr_factor(optim.total_steps, config) == 0.0
