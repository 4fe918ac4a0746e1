"""Generation: KV-cached decoding equals a full-forward reference; sampling options; stopping; progress."""

import re
import sys

import pytest
import torch
import torch.nn as nn

from model import MegaByteConfig, build_model, generate, generate_ids, sample


def model_for(architecture: str, patch_size: int = 4) -> nn.Module:
    if architecture == "transformer":
        config = MegaByteConfig(architecture="transformer", patch_size=1, local_layers=0, seq_len=64,
                                global_dim=32, global_layers=2, global_heads=2)
    else:
        config = MegaByteConfig(seq_len=64, patch_size=patch_size, global_dim=8 * patch_size, global_layers=2,
                                global_heads=2, local_dim=16, local_layers=2, local_heads=2)
    torch.manual_seed(0)
    # float64 so that the cached and the full computation cannot split a near-tie differently
    return build_model(config).double().eval()


def greedy_reference(model: nn.Module, prompt: torch.Tensor, new_bytes: int) -> torch.Tensor:
    """No cache: rerun the whole forward for every byte (bytes only, as generate samples)."""
    ids = prompt
    for _ in range(new_bytes):
        padded = nn.functional.pad(ids, (0, 1), value=0)  # logits[:, -1] predicts the slot we add
        logits = model(padded)[:, -1, :256]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("architecture, patch_size", [("megabyte", 4), ("megabyte", 8), ("megabyte", 1),
                                                       ("transformer", 1)])
@pytest.mark.parametrize("prompt_len", [0, 5, 8, 13])
def test_cached_greedy_generation_equals_the_full_forward_reference(architecture, patch_size, prompt_len):
    model = model_for(architecture, patch_size)
    prompt = torch.randint(0, 256, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    new_bytes = 64 - prompt_len  # right up to seq_len: every patch boundary and the last slot
    out = generate(model, prompt, new_bytes, temperature=0, stop_at_boundary=False)
    assert torch.equal(out, greedy_reference(model, prompt, new_bytes))


def test_megabyte_runs_one_global_step_per_completed_patch():
    model = model_for("megabyte", 4)
    calls = []
    model.global_model.register_forward_hook(lambda module, args, out: calls.append(out.shape[1]))
    generate(model, torch.zeros(1, 6, dtype=torch.long), 10, temperature=0, stop_at_boundary=False)
    # prefill reads the pad + 1 complete patch; new bytes 6..15 complete the patches that end at
    # bytes 7, 11 and 15, and the last needs no global step because no byte follows it
    assert calls == [2, 1, 1]


@pytest.mark.parametrize("architecture", ["megabyte", "transformer"])
def test_byte_string_prompts_of_any_lengths_are_batched_and_seeded(architecture):
    model = model_for(architecture)
    prompts = [b"hello", b"", b"abc", b"world", b"\x00\x00\x00\x00\x00\x00\x00"]
    first = generate(model, prompts, 9, top_k=40, top_p=0.9, seed=7, stop_at_boundary=False)
    assert [len(x) for x in first] == [9] * 5 and all(isinstance(x, bytes) for x in first)
    assert generate(model, prompts, 9, top_k=40, top_p=0.9, seed=7, stop_at_boundary=False) == first
    assert generate(model, prompts, 9, seed=8, stop_at_boundary=False) != first
    # a row's greedy continuation does not depend on the other prompts in the call
    alone = generate(model, [b"abc"], 9, temperature=0)
    assert generate(model, prompts, 9, temperature=0)[2] == alone[0]
    # past the context (64) the window slides instead of failing
    assert [len(x) for x in generate(model, [b"x" * 60, b"y" * 70], 10, stop_at_boundary=False)] == [10, 10]


class ScriptedModel(nn.Module):
    """Emits a fixed id sequence per row, through the same prefill/decode_step interface."""

    def __init__(self, script: list[list[int]]):
        super().__init__()
        self.config = MegaByteConfig()
        self.weight = nn.Parameter(torch.zeros(1))
        self.script = torch.tensor(script)

    def logits(self, step: int) -> torch.Tensor:
        return nn.functional.one_hot(self.script[:, step], self.config.vocab_size).double() * 10

    def prefill(self, ids, max_len):
        return self.logits(0), {"step": 0}

    def decode_step(self, next_ids, state):
        state["step"] += 1
        return self.logits(state["step"])

    def out_of_global_positions(self, state):
        return False


def test_generation_stops_at_the_boundary_per_row_and_fills_with_pad():
    model = ScriptedModel([[65, 66, 257, 67, 68], [70, 71, 72, 73, 74]])
    out = generate_ids(model, torch.zeros(2, 0, dtype=torch.long), 4, temperature=0)
    assert out.tolist() == [[65, 66, 257, 256], [70, 71, 72, 73]]
    assert generate(model, [b"", b""], 4, temperature=0) == [b"AB", b"FGHI"]
    both_stop = ScriptedModel([[65, 257, 1, 1], [257, 2, 2, 2]])
    assert generate_ids(both_stop, torch.zeros(2, 0, dtype=torch.long), 4, temperature=0).shape == (2, 2)
    # without stop_at_boundary the boundary is never sampled: the second likeliest id comes instead
    out = generate_ids(model, torch.zeros(2, 0, dtype=torch.long), 4, temperature=0, stop_at_boundary=False)
    assert 257 not in out.tolist()[0] and out.shape == (2, 4)


def test_sampling_options():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0], [5.0, 0.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    assert sample(logits, temperature=0).tolist() == [1, 0]
    assert sample(logits, top_k=1, generator=generator).tolist() == [1, 0]
    assert sample(logits, top_p=0.01, generator=generator).tolist() == [1, 0]
    draws = torch.stack([sample(logits, top_k=2, generator=generator) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 2}  # both of the top two, nothing else
    draws = torch.stack([sample(logits, temperature=100.0, generator=generator) for _ in range(200)])
    assert set(draws[:, 1].tolist()) == {0, 1, 2, 3}  # a high temperature flattens the distribution


def test_generation_says_how_fast_it_went_only_when_asked(capsys, monkeypatch):
    model = model_for("megabyte")
    generate(model, [b"ab", b"cde"], 12, stop_at_boundary=False)
    assert capsys.readouterr().err == ""  # off by default
    generate(model, [b"ab", b"cde"], 12, stop_at_boundary=False, progress=True)  # a log: a line at each end
    start, end = capsys.readouterr().err.splitlines()
    assert start == "generating 12 bytes after each of 2 prompts ..."
    assert re.fullmatch(r"\.\.\. done: 24 bytes in [0-9.]+ s \([0-9,]+ bytes/s\)", end), end
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a bar
    generate(model, torch.zeros(1, 3, dtype=torch.long), 12, stop_at_boundary=False, progress=True)
    assert "generating 12 bytes: 100%" in capsys.readouterr().err


def test_a_long_job_in_a_log_writes_its_pace_as_it_goes(capsys, monkeypatch):
    """Away from a terminal a line a minute: the bytes done and the bytes/s since the last line
    (here every update is a minute later)."""
    from model import progress

    clock = iter(range(0, 1000, 60))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    with progress.Progress("generating", 400) as shown:
        for _ in range(3):
            shown.update(100)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["generating ...", "... 100 bytes (25%), 2 bytes/s over the last 60 s",
                     "... 200 bytes (50%), 2 bytes/s over the last 60 s",
                     "... 300 bytes (75%), 2 bytes/s over the last 60 s"]
