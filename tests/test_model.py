"""MegaByte and the byte-transformer baseline: causality, loss, config, precision, training."""

import dataclasses
import math

import pytest
import torch

from model import (PRESETS, ByteTransformer, MegaByte, MegaByteConfig, bits_per_byte,
                   build_model, byte_loss)


def small_config(architecture: str = "megabyte", **fields) -> MegaByteConfig:
    """A model that runs in milliseconds; fields override it."""
    if architecture == "transformer":
        base = dict(architecture="transformer", patch_size=1, local_layers=0, seq_len=64,
                    global_dim=32, global_layers=2, global_heads=2, dropout=0.0)
    else:
        base = dict(seq_len=64, patch_size=4, global_dim=32, global_layers=2, global_heads=2,
                    local_dim=16, local_layers=2, local_heads=2, dropout=0.0)
    return MegaByteConfig(**{**base, **fields})


@pytest.mark.parametrize("architecture, patch_size, seq_len", [
    ("megabyte", 1, 16), ("megabyte", 4, 64), ("megabyte", 8, 64), ("megabyte", 3, 48), ("transformer", 1, 64),
])
def test_changing_byte_j_never_changes_predictions_up_to_j(architecture, patch_size, seq_len):
    torch.manual_seed(0)
    fields = {} if architecture == "transformer" else dict(patch_size=patch_size, global_dim=8 * patch_size)
    model = build_model(small_config(architecture, seq_len=seq_len, **fields)).eval()
    ids = torch.randint(0, 256, (2, seq_len))
    logits = model(ids)
    for j in sorted({0, patch_size - 1, patch_size, seq_len // 2 + 1, seq_len - 2, seq_len - 1}):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] + 1 + torch.randint(0, 255, (2,))) % 256
        new_logits = model(changed)
        torch.testing.assert_close(new_logits[:, : j + 1], logits[:, : j + 1], rtol=0, atol=1e-6)
        if j < seq_len - 1:  # and the byte does reach the predictions after it
            assert (new_logits[:, j + 1:] - logits[:, j + 1:]).abs().max() > 1e-4


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_shorter_and_unaligned_inputs_give_the_prefix_of_the_full_logits(architecture):
    torch.manual_seed(0)
    model = build_model(small_config(architecture)).eval()
    ids = torch.randint(0, 256, (2, 64))
    full = model(ids)
    for length in (1, 8, 13, 63):  # 13 and 63 are not multiples of P=4: padded inside, cut back
        out = model(ids[:, :length])
        assert out.shape == (2, length, 258)
        torch.testing.assert_close(out, full[:, :length], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_megabyte_shapes_and_interface():
    config = small_config()
    model = MegaByte(config)
    assert model(torch.zeros(3, 64, dtype=torch.long)).shape == (3, 64, config.vocab_size)
    assert model.head.weight is model.local_embed.weight  # tied, as the paper's softmax(E·h)
    untied = MegaByte(dataclasses.replace(config, tie_embeddings=False))
    assert untied.num_parameters() == model.num_parameters() + config.vocab_size * config.local_dim
    assert isinstance(build_model(small_config("transformer")), ByteTransformer)


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_loss_equals_hand_computed_cross_entropy(architecture):
    torch.manual_seed(0)
    model = build_model(small_config(architecture, seq_len=8)).eval()
    ids = torch.tensor([[3, 0, 255, 7, 256, 256, 1, 2], [9, 9, 9, 9, 9, 9, 9, 257]])
    logits = model(ids)
    total, count = 0.0, 0
    for b in range(2):
        for t in range(8):
            if ids[b, t] != 256:
                row = logits[b, t].double()
                total += (torch.logsumexp(row, 0) - row[ids[b, t]]).item()
                count += 1
    assert count == 14
    assert byte_loss(logits, ids).item() == pytest.approx(total / count, rel=1e-5)
    assert bits_per_byte(math.log(2)) == pytest.approx(1.0)


def test_pad_is_ignored_and_byte_zero_is_trained():
    torch.manual_seed(0)
    model = build_model(small_config())
    zeros = torch.zeros(2, 64, dtype=torch.long)
    loss = byte_loss(model(zeros), zeros)
    loss.backward()
    assert loss.item() > 1.0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    # PAD targets: no loss, no gradient into their logits, whatever the logits say
    logits = torch.randn(1, 6, 258, requires_grad=True)
    ids = torch.tensor([[5, 256, 0, 256, 256, 9]])
    byte_loss(logits, ids).backward()
    assert logits.grad[0, [1, 3, 4]].abs().sum() == 0
    assert logits.grad[0, [0, 2, 5]].abs().sum() > 0
    assert byte_loss(logits, ids).item() == pytest.approx(byte_loss(logits[:, [0, 2, 5]], ids[:, [0, 2, 5]]).item())


@pytest.mark.parametrize("fields, message", [
    (dict(seq_len=100, patch_size=8), "multiple of patch_size"),
    (dict(global_dim=100, patch_size=8), "global_dim=100 must be a multiple of patch_size"),
    (dict(global_heads=3), "global_heads=3 must divide"),
    (dict(local_heads=3), "local_heads=3 must divide"),
    (dict(architecture="transformer"), "set patch_size=1 and local_layers=0"),
    (dict(architecture="rnn"), "architecture must be one of"),
    (dict(norm="batchnorm"), "norm must be one of"),
])
def test_config_errors_say_what_to_change(fields, message):
    with pytest.raises(ValueError, match=message):
        MegaByteConfig(**fields)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        MegaByteConfig.from_dict({**PRESETS["tiny"].to_dict(), "n_embd": 3})


def test_the_vocabulary_is_the_datas_and_not_a_setting():
    from pipeline.format import vocab

    config = PRESETS["tiny"]
    assert (config.vocab_size, config.pad_id, config.boundary_id) == \
        (vocab.VOCAB_SIZE, vocab.PAD_ID, vocab.BOUNDARY_ID)
    stored = config.to_dict()
    assert MegaByteConfig.from_dict(stored) == config  # a config that states our ids (as exports do)
    assert MegaByteConfig.from_dict({k: v for k, v in stored.items() if k != "pad_id"}) == config
    with pytest.raises(ValueError, match="pad_id=257, but the byte vocabulary is fixed"):
        MegaByteConfig.from_dict({**stored, "pad_id": 257})
    with pytest.raises(TypeError):
        MegaByteConfig(pad_id=256)


@pytest.mark.parametrize("fields", [dict(norm="rmsnorm", activation="swiglu", bias=False),
                                    dict(activation="relu", pos_embedding="none")])
def test_variants_train(fields):
    torch.manual_seed(0)
    model = build_model(small_config(**fields))
    ids = torch.randint(0, 256, (2, 64))
    byte_loss(model(ids), ids).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_bf16_autocast_forward_and_backward_on_cpu(architecture):
    torch.manual_seed(0)
    model = build_model(small_config(architecture))
    ids = torch.randint(0, 256, (2, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
        loss = byte_loss(logits, ids)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = build_model(small_config())
    checkpointed = build_model(small_config(activation_checkpointing=True))
    checkpointed.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 256, (2, 64))
    for model in (plain, checkpointed):
        byte_loss(model(ids), ids).backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = build_model(small_config(dropout=0.5))
    ids = torch.randint(0, 256, (1, 64))
    assert not torch.equal(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_small_megabyte_overfits_4kb_to_under_a_tenth_of_a_bit_per_byte():
    torch.manual_seed(0)
    config = dataclasses.replace(PRESETS["tiny"], dropout=0.0, global_dim=128, global_layers=2, global_heads=2,
                                 local_dim=64, local_layers=1, local_heads=2)
    model = build_model(config)
    ids = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).view(8, 512)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        loss = byte_loss(model(ids), ids)
        if bits_per_byte(loss.item()) < 0.1:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert bits_per_byte(loss.item()) < 0.1, f"{bits_per_byte(loss.item()):.3f} bits per byte after {step} steps"
