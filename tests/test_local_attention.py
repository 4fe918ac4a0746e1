"""local_attention="matmul": the local model's attention by batched matmuls computes what SDPA
computes, in every call shape (training with and without the cross-patch mask, prefill, one
query against the cache), with the same gradients; only architectures with a local model take it.
Cached generation with it is checked with the rest of the family (tests/test_model_family.py).
Also the rotary positions of cross-patch attention: what they turn, and that they are not weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import MegaByteConfig, build_model, byte_loss
from model.attention import matmul_attention, rotary_table, rotate

SMALL = dict(seq_len=32, patch_size=4, global_dim=32, global_layers=2, global_heads=2, local_dim=16,
             local_layers=2, local_heads=2, dropout=0.0)
LOCAL = {  # name → config fields on top of SMALL
    "megabyte": dict(),
    "cross-patch": dict(local_cross_patch=2),
    "cross-patch-whole": dict(local_cross_patch=4),
    "no_global": dict(architecture="no_global", global_layers=0),
}


def twins(fields: dict, dtype: torch.dtype = torch.float64):
    """The same weights twice, with "sdpa" and with "matmul" local attention."""
    torch.manual_seed(0)
    sdpa = build_model(MegaByteConfig(**{**SMALL, **fields})).to(dtype)
    matmul = build_model(MegaByteConfig(**{**SMALL, **fields, "local_attention": "matmul"})).to(dtype)
    matmul.load_state_dict(sdpa.state_dict())
    return sdpa, matmul


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_matmul_gives_the_logits_and_gradients_of_sdpa(name):
    sdpa, matmul = twins(LOCAL[name])
    ids = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(1))  # 30: padded inside
    for model in (sdpa, matmul):
        model.eval()
        byte_loss(model(ids), ids).backward()
    torch.testing.assert_close(matmul(ids), sdpa(ids), rtol=0, atol=1e-10)
    grads = {n: p.grad for n, p in sdpa.named_parameters()}
    for n, p in matmul.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=0, atol=1e-10, msg=lambda m: f"{n}: {m}")
    assert all(block.attn.kernel == "matmul" for block in matmul.local_model.blocks)
    if name != "no_global":  # the global model keeps SDPA
        assert all(block.attn.kernel == "sdpa" for block in matmul.global_model.blocks)


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_matmul_agrees_with_sdpa_under_bf16_autocast(name):
    sdpa, matmul = twins(LOCAL[name], torch.float32)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = [model(ids) for model in (sdpa, matmul)]
    assert logits[1].dtype == torch.bfloat16 and torch.isfinite(logits[1]).all()
    # bf16 keeps 8 bits of mantissa: both kernels round, differently
    torch.testing.assert_close(logits[1].float(), logits[0].float(), rtol=1.6e-2, atol=1e-2)


def test_matmul_attention_equals_sdpa_in_every_call_shape():
    """The shapes CausalSelfAttention hands over: B·K patches (causal, or the cross-patch mask),
    prefill of n queries at the end of S cached keys (bottom-right mask), one query, all S keys."""
    generator = torch.Generator().manual_seed(0)

    def qkv(n, S):  # (N, nh, n, hs), (N, nh, S, hs) twice
        return torch.randn(6, 2, n + 2 * S, 8, generator=generator, dtype=torch.float64).split([n, S, S], dim=2)

    cross_patch = torch.rand(6, 1, 4, 6, generator=generator) < 0.7
    cross_patch[..., 2:] |= torch.eye(4, dtype=torch.bool)  # every query sees itself
    cases = [(qkv(4, 4), None, True), (qkv(4, 6), cross_patch, False),
             (qkv(3, 7), torch.ones(3, 7, dtype=torch.bool).tril(diagonal=4), False), (qkv(1, 7), None, False)]
    for (q, k, v), mask, is_causal in cases:
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        torch.testing.assert_close(matmul_attention(q, k, v, attn_mask=mask, is_causal=is_causal), expected,
                                   rtol=0, atol=1e-12)


def test_matmul_attention_drops_probabilities_and_rescales_the_rest():
    """v = the identity, so the output rows are the attention probabilities themselves."""
    q, k = torch.randn(32, 4, 8, generator=torch.Generator().manual_seed(0)).split(16)  # (N, 4, hs)
    v = torch.eye(4).expand(16, 4, 4)  # (N, S, S): one key, one output column
    probabilities = matmul_attention(q, k, v, is_causal=True)  # (N, 4, 4)
    torch.manual_seed(0)
    dropped = matmul_attention(q, k, v, is_causal=True, dropout_p=0.5)
    kept = dropped != 0
    assert 0.3 < kept[probabilities > 0].float().mean() < 0.7
    torch.testing.assert_close(dropped[kept], probabilities[kept] / 0.5)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(16, 4))
    assert (probabilities.triu(diagonal=1) == 0).all() and math.isclose(probabilities[0, 0, 0].item(), 1.0)


@pytest.mark.parametrize("fields, message", [
    (dict(architecture="transformer", patch_size=1, local_layers=0, local_attention="matmul"),
     'set local_attention="sdpa" for transformer'),
    (dict(architecture="no_local", local_layers=0, local_attention="matmul"),
     'set local_attention="sdpa" for no_local'),
    (dict(local_attention="flash"), r"local_attention must be one of \('sdpa', 'matmul'\), got 'flash'"),
])
def test_local_attention_config_errors_say_what_to_set(fields, message):
    with pytest.raises(ValueError, match=message):
        MegaByteConfig(**{**SMALL, **fields})


def test_rotary_turns_each_pair_by_its_angle_so_that_scores_depend_on_distance_only():
    hs, S = 8, 6
    cos, sin = rotary_table(12, hs)  # (12, hs) each, fp32
    x = torch.randn(3, S, hs, dtype=torch.float64)
    turned = rotate(x, cos[2:2 + S].double(), sin[2:2 + S].double())  # positions 2..7
    # as a complex number x1 + i·x2, pair i at position t is multiplied by e^(i·t·θ_i)
    theta = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)  # (hs/2,)
    angle = torch.arange(2, 2 + S, dtype=torch.float64)[:, None] * theta  # (S, hs/2)
    z = torch.complex(*x.chunk(2, dim=-1)) * torch.polar(torch.ones_like(angle), angle)
    assert torch.allclose(turned, torch.cat([z.real, z.imag], dim=-1), atol=1e-6)

    q, k = torch.randn(1, hs, dtype=torch.float64), torch.randn(1, hs, dtype=torch.float64)

    def score(t: int, u: int) -> float:  # query at position t, key at u
        return (rotate(q, cos[t:t + 1].double(), sin[t:t + 1].double())
                @ rotate(k, cos[u:u + 1].double(), sin[u:u + 1].double()).T).item()

    assert score(5, 2) == pytest.approx(score(3, 0)) == pytest.approx(score(11, 8))
    assert score(5, 2) != pytest.approx(score(5, 3))


def test_rotary_tables_are_not_weights_and_follow_the_model_dtype():
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **LOCAL["cross-patch"]}))
    assert not [key for key in model.state_dict() if "rotary" in key]  # weights files stay as they were
    attention = model.local_model.blocks[0].attn
    assert attention.rotary_cos.shape == (2 + 4, 16 // 2)  # r + P positions, head size 8
    assert model.to(torch.bfloat16).local_model.blocks[0].attn.rotary_sin.dtype == torch.bfloat16
