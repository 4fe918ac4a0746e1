"""The whole model family on tiny configs: every architecture and option is causal, its cached
generation equals recomputation (also past the context), and bad combinations are one-line errors."""

import pytest
import torch
import torch.nn as nn

from model import MegaByteConfig, build_model, byte_loss, generate_ids
from model.generate import window_start
from model.layers import Transformer

from generation_reference import reference_ids

T = 32  # seq_len of every model here
SMALL = dict(seq_len=T, global_dim=32, global_layers=2, global_heads=2, local_dim=16, local_layers=2, local_heads=2,
             dropout=0.0)
FAMILY = {  # name → config fields on top of SMALL
    "megabyte": dict(patch_size=4),
    "megabyte-p3": dict(patch_size=3, seq_len=30, global_dim=36),
    "cross-patch": dict(patch_size=4, local_cross_patch=2),
    "cross-patch-whole": dict(patch_size=4, local_cross_patch=4),
    "conv": dict(patch_size=4, conv_encoder=True),
    "conv+cross-patch": dict(patch_size=4, conv_encoder=True, local_cross_patch=3),
    "transformer": dict(architecture="transformer", patch_size=1, local_layers=0),
    "perceiver_ar": dict(architecture="perceiver_ar", patch_size=1, local_layers=0, latents=8),
    "perceiver_ar-all-latents": dict(architecture="perceiver_ar", patch_size=1, local_layers=0, latents=T),
    "no_local": dict(architecture="no_local", patch_size=4, local_layers=0),
    "no_local+conv": dict(architecture="no_local", patch_size=4, local_layers=0, conv_encoder=True),
    "no_global": dict(architecture="no_global", patch_size=4, global_layers=0),
    # the local model's attention by batched matmuls instead of SDPA (tests/test_local_attention.py)
    "matmul": dict(patch_size=4, local_attention="matmul"),
    "cross-patch+matmul": dict(patch_size=4, local_cross_patch=2, local_attention="matmul"),
    "no_global+matmul": dict(architecture="no_global", patch_size=4, global_layers=0, local_attention="matmul"),
    # SpaceByte (tests/test_spacebyte.py tests it on text): random bytes are mostly spacelike, so
    # boundaries are many, and global_len=4 runs out of them early
    "spacebyte": dict(architecture="spacebyte", patch_size=1, local_window=4, global_len=4),
    "spacebyte-periodic": dict(architecture="spacebyte", patch_size=4, patching="periodic", local_window=3),
}


def family_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    # float64 so that cached and full computations cannot split a near-tie differently
    return build_model(MegaByteConfig(**{**SMALL, **FAMILY[name]})).double().eval()


def reach(config: MegaByteConfig, t: int, q: int) -> bool:
    """May the prediction of byte q depend on byte t, by the architecture's design?"""
    P = config.patch_size
    if config.architecture == "no_local":  # patch k's bytes come from patches < k only
        return q >= (t // P + 1) * P
    if config.architecture == "no_global":  # patches see nothing of each other
        return t < q < (t // P + 1) * P
    return q > t


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_changing_byte_t_changes_no_prediction_up_to_t_and_reaches_the_next_one(name):
    model = family_model(name)
    config = model.config
    seq_len, P = config.seq_len, config.patch_size
    ids = torch.randint(0, 256, (2, seq_len), generator=torch.Generator().manual_seed(1))
    logits = model(ids)  # (B, L, V)
    L = min(config.latents, seq_len) if config.architecture == "perceiver_ar" else seq_len
    assert logits.shape == (2, L, config.vocab_size)
    first = seq_len - L  # logits[:, j] predicts byte first + j
    # the first and last bytes, and both sides of patch boundaries early, in the middle and late
    for t in sorted({0, 1, P - 1, P, 2 * P - 1, seq_len // 2, seq_len // 2 + 1, seq_len - P - 1, seq_len - P,
                     seq_len - 2, seq_len - 1}):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.randint(0, 255, (2,))) % 256
        difference = (model(changed) - logits).abs().amax(dim=(0, 2))  # (L,)
        for j, q in enumerate(range(first, seq_len)):
            if not reach(config, t, q):
                assert difference[j] < 1e-9, f"byte {t} changed the prediction of byte {q}"
        reached = [j for j, q in enumerate(range(first, seq_len)) if reach(config, t, q)]
        if reached:  # and the first prediction it may reach, it does
            assert difference[reached[0]] > 1e-4, f"byte {t} does not reach byte {first + reached[0]}"


def test_cross_patch_attention_reaches_the_last_r_positions_of_the_previous_patch_with_gradients():
    """With the global context zeroed and one local layer, patch 1 depends on patch 0 through the
    r = 2 keys/values of its slots 2 and 3 only, whose inputs are bytes 2 and 3 (slot s reads byte
    s-1). Gradients of a loss on patch 1 alone reach exactly those byte embeddings."""
    for r, expected in ((2, {2, 3}), (0, set())):
        torch.manual_seed(0)
        model = build_model(MegaByteConfig(**{**SMALL, "patch_size": 4, "local_layers": 1, "local_cross_patch": r,
                                              "tie_embeddings": False})).double()
        nn.init.zeros_(model.global_to_local.weight)
        nn.init.zeros_(model.global_to_local.bias)
        ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])  # patch 0 = bytes 1..4, patch 1 = bytes 5..8
        byte_loss(model(ids)[:, 4:], ids[:, 4:]).backward()
        rows = model.local_embed.weight.grad.abs().sum(dim=1)  # (V,)
        assert {b for b in (1, 2, 3, 4) if rows[b] > 0} == expected, f"r={r}"
        assert rows[5:8].min() > 0  # patch 1's own bytes 5, 6, 7 (byte 8 is read by no slot)


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("prompt_len", [0, 13])
def test_cached_decoding_gives_the_logits_of_the_full_forward(name, prompt_len):
    """prefill, then decode_step fed the true bytes: every step's logits equal those of the whole
    forward over the bytes so far (float64), up to the last slot of the context."""
    model = family_model(name)
    seq_len = model.config.seq_len
    ids = torch.randint(0, 256, (2, seq_len), generator=torch.Generator().manual_seed(prompt_len))
    logits, state = model.prefill(ids[:, :prompt_len], seq_len)
    for t in range(prompt_len, seq_len):  # logits predicts byte t
        full = model(ids[:, : t + 1])[:, -1]  # byte t is read by nothing that predicts it
        torch.testing.assert_close(logits, full, rtol=0, atol=1e-9, msg=lambda m: f"byte {t}: {m}")
        if t < seq_len - 1:
            logits = model.decode_step(ids[:, t], state)


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("prompt_len", [5])
def test_cached_greedy_generation_equals_recomputation(name, prompt_len):
    model = family_model(name)
    prompt = torch.randint(0, 256, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    new_bytes = model.config.seq_len - prompt_len  # right up to the context: every boundary and the last slot
    out = generate_ids(model, prompt, new_bytes, temperature=0, stop_at_boundary=False)
    assert torch.equal(out, reference_ids(model, prompt, new_bytes))


@pytest.mark.parametrize("name, prompt_len, keep", [
    *[(name, 3, None) for name in
      ("megabyte", "conv+cross-patch", "transformer", "perceiver_ar", "no_local", "no_global")],
    ("megabyte", 45, None), ("conv+cross-patch", 45, None), ("perceiver_ar", 45, None), ("no_global", 45, None),
    ("conv+cross-patch", 10, 9), ("no_local", 10, 9), ("megabyte", 10, 0), ("transformer", 10, 0),
    ("spacebyte", 3, None), ("spacebyte", 45, None), ("spacebyte-periodic", 10, 9), ("spacebyte", 10, 0),
])
def test_generation_past_the_context_slides_a_patch_aligned_window(name, prompt_len, keep):
    """3× the context, from a short prompt and from one longer than the context, with the default
    window (half the context kept), one that is no multiple of P, and an empty one."""
    model = family_model(name)
    prompt = torch.randint(0, 256, (1, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    new_bytes = 3 * model.config.seq_len
    out = generate_ids(model, prompt, new_bytes, temperature=0, stop_at_boundary=False, keep=keep)
    assert out.shape == (1, prompt_len + new_bytes) and torch.equal(out[:, :prompt_len], prompt)
    assert torch.equal(out, reference_ids(model, prompt, new_bytes, keep))


def test_window_start_drops_whole_patches_only():
    assert window_start(20, 4, 31) == 0  # all fits
    assert window_start(45, 4, 31) == 16  # 45 - 31 = 14 bytes too many: drop 4 whole patches
    assert window_start(32, 4, 16) == 16 and window_start(32, 4, 18) == 16 and window_start(32, 4, 0) == 32
    assert window_start(45, 1, 31) == 14


def test_perceiver_ar_scores_only_its_latents():
    model = family_model("perceiver_ar")
    ids = torch.randint(0, 256, (2, 20))
    logits = model(ids)  # (B, 8, V): the last 8 of 20 bytes
    assert logits.shape == (2, 8, 258)
    expected = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 12:].flatten()).float()
    torch.testing.assert_close(byte_loss(logits, ids), expected)
    assert model(ids[:, :5]).shape == (2, 5, 258)  # fewer bytes than latents: every one is a latent
    # the prefix outside the latents still counts, through the cross-attention
    changed = ids.clone()
    changed[:, 0] += 1
    assert (model(changed) - logits).abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_every_architecture_trains(name):
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **FAMILY[name], "dropout": 0.1}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 8, (4, model.config.seq_len))  # 8 byte values: quick to learn something
    losses = []
    for _ in range(8):
        loss = byte_loss(model(ids), ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_bf16_autocast_forward_backward_and_cached_decoding(name):
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **FAMILY[name]}))
    ids = torch.randint(0, 256, (2, model.config.seq_len))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
        loss = byte_loss(logits, ids)
        assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
        loss.backward()
        out = generate_ids(model.eval(), ids[:, :5], 40, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert out.shape[1] > 5


@pytest.mark.parametrize("name", ["megabyte", "conv+cross-patch", "cross-patch-whole", "no_global", "spacebyte"])
def test_activation_checkpointing_gives_the_same_gradients_with_both_options(name, monkeypatch):
    """Without checkpointing, with it, and with the local model's patches checkpointed in pieces of
    one patch (each with the patch before it, for cross-patch attention)."""
    results = []
    for checkpointing, piece in ((False, None), (True, None), (True, 2 * FAMILY[name]["patch_size"])):
        if piece:
            monkeypatch.setattr(Transformer, "CHUNK_POSITIONS", piece)  # batch 2: one patch a piece
        torch.manual_seed(0)
        model = build_model(MegaByteConfig(**{**SMALL, **FAMILY[name],
                                              "activation_checkpointing": checkpointing})).double()
        ids = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(0))
        logits = model(ids)
        byte_loss(logits, ids).backward()
        results.append([logits, *(p.grad for p in model.parameters())])
    for whole, pieces, without in zip(*results):
        torch.testing.assert_close(whole, without, rtol=0, atol=1e-12)
        torch.testing.assert_close(pieces, without, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["megabyte", "conv+cross-patch", "cross-patch-whole", "no_global", "spacebyte"])
def test_inference_runs_the_local_model_in_pieces_with_the_same_logits(name, monkeypatch):
    """Without gradients the local model's patches go in pieces (of one patch here, each with the
    patch before it): the logits are those of the whole forward."""
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **FAMILY[name]})).double().eval()
    ids = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(0))
    whole = model(ids)  # with gradients: one piece
    monkeypatch.setattr(Transformer, "CHUNK_POSITIONS", 2 * FAMILY[name]["patch_size"])  # batch 2
    with torch.no_grad():
        torch.testing.assert_close(model(ids), whole.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fields, message", [
    (dict(architecture="perceiver"), "architecture must be one of ('megabyte', 'transformer', 'perceiver_ar'"),
    (dict(architecture="perceiver_ar", patch_size=1, local_layers=0), "perceiver_ar needs 1 <= latents <= seq_len"),
    (dict(architecture="perceiver_ar", patch_size=1, local_layers=0, latents=T + 1), "latents <= seq_len=32"),
    (dict(architecture="perceiver_ar", patch_size=4, local_layers=0, latents=8), "set patch_size=1 and local_layers=0"),
    (dict(latents=4), "latents is a perceiver_ar field: set latents=0 for megabyte"),
    (dict(local_cross_patch=5), "local_cross_patch must be in [0, patch_size=4]"),
    (dict(local_cross_patch=-1), "local_cross_patch must be in [0, patch_size=4]"),
    (dict(local_cross_patch=2, local_dim=18, local_heads=2), "needs an even local head size"),
    (dict(architecture="transformer", patch_size=1, local_layers=0, local_cross_patch=1),
     "local_cross_patch is a megabyte option"),
    (dict(architecture="no_global", global_layers=0, local_cross_patch=1), "local_cross_patch is a megabyte option"),
    (dict(architecture="transformer", patch_size=1, local_layers=0, conv_encoder=True),
     "conv_encoder is an option of megabyte and no_local"),
    (dict(architecture="no_global", global_layers=0, conv_encoder=True),
     "conv_encoder is an option of megabyte and no_local"),
    (dict(architecture="no_local"), "no_local has no local model: set local_layers=0"),
    (dict(architecture="no_global"), "no_global has no global model: set global_layers=0"),
    (dict(architecture="no_global", global_layers=0, local_layers=0), "local_layers must be at least 1 for no_global"),
])
def test_combinations_the_paper_does_not_define_are_one_line_errors(fields, message):
    with pytest.raises(ValueError) as error:
        MegaByteConfig(**{**SMALL, "patch_size": 4, **fields})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_window_that_keeps_the_whole_context_is_refused():
    model = family_model("megabyte")
    with pytest.raises(ValueError, match="keep=32 must leave room in the context"):
        generate_ids(model, torch.zeros(1, 3, dtype=torch.long), 40, keep=32)


@pytest.mark.parametrize("name", ["cross-patch", "conv", "perceiver_ar", "no_local", "no_global", "spacebyte"])
def test_every_architecture_round_trips_through_a_weights_file(tmp_path, name):
    from model.weights import load_weights, save_weights

    model = family_model(name).float()
    save_weights(model, tmp_path / "model.safetensors")
    loaded, _ = load_weights(tmp_path / "model.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    ids = torch.randint(0, 256, (1, model.config.seq_len))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
