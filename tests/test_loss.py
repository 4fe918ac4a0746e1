"""The fused head + loss (model/loss.py ByteHead, what the trainer uses) against byte_loss on the
logits: the same loss and the same gradients, for every architecture, across chunk boundaries and
PAD targets, without ever saving the logits of every position."""

import pytest
import torch

import model.loss
from model import PRESETS, build_model, byte_loss
from model.config import PAD_ID

ARCHITECTURES = ["tiny", "tiny-transformer", "tiny-perceiver-ar", "tiny-no-local", "tiny-no-global",
                 "tiny-cross-patch"]


def batch(seq_len: int) -> torch.Tensor:
    ids = torch.randint(0, 256, (3, seq_len), generator=torch.Generator().manual_seed(1))  # (B, T)
    ids[1, seq_len // 3:] = PAD_ID  # a short document: its PAD targets do not count
    ids[2, 5] = PAD_ID
    return ids


def loss_and_grads(net, ids, fused: bool) -> tuple[torch.Tensor, dict]:
    net.zero_grad(set_to_none=True)
    loss = net(ids, loss=True)[0] if fused else byte_loss(net(ids), ids)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize("preset", ARCHITECTURES)
def test_fused_loss_and_gradients_equal_the_loss_of_the_logits(preset, monkeypatch):
    monkeypatch.setattr(model.loss, "CHUNK_ROWS", 77)  # chunks that do not divide the rows
    torch.manual_seed(0)
    net = build_model(PRESETS[preset]).double().eval()  # no dropout: both passes see one network
    ids = batch(net.config.seq_len)
    plain, plain_grads = loss_and_grads(net, ids, fused=False)
    fused, fused_grads = loss_and_grads(net, ids, fused=True)
    # both take the softmax in fp32: they agree to fp32's precision, relative to each tensor's scale
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for name, grad in plain_grads.items():
        assert (fused_grads[name] - grad).abs().max() <= 1e-6 * grad.abs().max(), name


def test_target_count_is_the_non_pad_targets_predicted():
    torch.manual_seed(0)
    for preset in ("tiny", "tiny-perceiver-ar"):
        net = build_model(PRESETS[preset]).eval()
        ids = batch(net.config.seq_len)
        logits = net(ids)  # (B, L, V)
        _, count = net(ids, loss=True)
        assert count.item() == (ids[:, ids.shape[1] - logits.shape[1]:] != PAD_ID).sum().item()


def test_bf16_autocast_agrees_with_the_plain_loss():
    torch.manual_seed(0)
    net = build_model(PRESETS["tiny"]).eval()
    ids = batch(net.config.seq_len)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = byte_loss(net(ids), ids)
        fused, _ = net(ids, loss=True)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(plain.item(), rel=1e-3)


def test_the_logits_of_every_position_are_never_saved(monkeypatch):
    """What autograd keeps for backward of the head and loss: byte_loss on the logits keeps
    (N, V)-sized tensors; the fused loss nothing larger than the hidden states (N, D_L)."""
    monkeypatch.setattr(model.loss, "CHUNK_ROWS", 256)
    torch.manual_seed(0)
    net = build_model(PRESETS["tiny"]).eval()
    ids = torch.randint(0, 256, (4, net.config.seq_len))  # (B, T)
    h = torch.randn(*ids.shape, net.config.local_dim, requires_grad=True)  # (B, T, D_L)
    rows, V, D_L = ids.numel(), net.config.vocab_size, net.config.local_dim

    def largest_saved(fused: bool) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = net.head(h, ids)[0] if fused else byte_loss(net.head(h), ids)
        loss.backward()
        return max(sizes)

    assert largest_saved(fused=False) >= rows * V
    assert largest_saved(fused=True) == rows * D_L  # h itself; D_L = 128 < V = 258


def test_no_gradient_is_computed_without_grad():
    torch.manual_seed(0)
    net = build_model(PRESETS["tiny"]).eval()
    ids = batch(net.config.seq_len)
    with torch.no_grad():
        fused, count = net(ids, loss=True)
        plain = byte_loss(net(ids), ids)
    assert not fused.requires_grad
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)


def test_a_batch_of_nothing_but_pad_gives_nan_as_byte_loss():
    net = build_model(PRESETS["tiny"]).eval()
    pads = torch.full((2, net.config.seq_len), PAD_ID)
    fused, count = net(pads, loss=True)
    assert count.item() == 0 and torch.isnan(fused) and torch.isnan(byte_loss(net(pads), pads))
