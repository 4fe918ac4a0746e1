"""MegaByte's local decoding step through CUDA graphs (model/cuda_graphs.py). On a CPU the graph
itself is stood in for by a replay that runs the step again eagerly, so that what the wrapper does
around it (one graph per cache length, the input copied in, the caches' lengths kept as update()
keeps them, across patches and cross-patch caches) is checked against plain decoding;
tests/test_gpu.py checks real graphs against eager generation on CUDA."""

from types import SimpleNamespace

import pytest
import torch

from model import MegaByteConfig, build_model, generate
from model.cuda_graphs import LocalStepGraphs

SMALL = dict(seq_len=64, global_dim=32, global_layers=2, global_heads=2, local_dim=16, local_layers=2,
             local_heads=2, dropout=0.0, patch_size=4)


def eager_capture(self, length):
    """A stand-in graph: its output tensor, refilled by running the step again on replay."""
    logits = self.step(self.x)  # the warm-up step the real capture runs too
    self.rewind(length)
    self.captured.append(length)
    return SimpleNamespace(replay=lambda: logits.copy_(self.step(self.x))), logits


@pytest.fixture
def stand_in_graphs(monkeypatch):
    monkeypatch.setattr(LocalStepGraphs, "capture", eager_capture)
    monkeypatch.setattr(LocalStepGraphs, "captured", [], raising=False)
    return LocalStepGraphs


@pytest.mark.parametrize("fields", [dict(), dict(local_cross_patch=2), dict(local_cross_patch=4),
                                    dict(architecture="no_global", global_layers=0)],
                         ids=["megabyte", "cross-patch-2", "cross-patch-4", "no_global"])
@pytest.mark.parametrize("prompt_len", [0, 6])
def test_decoding_through_the_graphs_gives_the_logits_of_eager_decoding(fields, prompt_len, stand_in_graphs):
    torch.manual_seed(0)
    model = build_model(MegaByteConfig(**{**SMALL, **fields})).double().eval()
    prompt = torch.randint(0, 256, (2, prompt_len))
    new = torch.randint(0, 256, (2, 30))  # bytes fed one by one: 7+ patches
    logits = {}
    for graphs in (False, True):
        first, state = model.prefill(prompt, prompt_len + 31, cuda_graphs=graphs)
        steps = [first] + [model.decode_step(new[:, i], state) for i in range(new.shape[1])]
        logits[graphs] = torch.stack(steps)  # (31, B, V)
        assert ("local_graphs" in state) == graphs
    torch.testing.assert_close(logits[True], logits[False], rtol=0, atol=1e-12)
    r, P = model.config.local_cross_patch, model.config.patch_size
    captured = stand_in_graphs.captured
    assert len(captured) == len(set(captured))  # each cache length captured once, then replayed
    assert set(captured) <= set(range(r + P)) and len(captured) >= P - 1


def test_cuda_graphs_are_refused_where_they_cannot_run():
    torch.manual_seed(0)
    transformer = build_model(MegaByteConfig(**{**SMALL, "architecture": "transformer", "patch_size": 1,
                                                "local_layers": 0})).eval()
    with pytest.raises(ValueError, match="no local step"):
        generate(transformer, [b"ab"], 4, cuda_graphs=True)
    megabyte = build_model(MegaByteConfig(**SMALL)).eval()
    with pytest.raises(ValueError, match="CUDA device, not cpu"):
        generate(megabyte, [b"ab"], 4, cuda_graphs=True)
