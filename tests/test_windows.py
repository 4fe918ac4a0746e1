"""Windowed evaluation (train/windows.py), the loader's evaluation (train/evaluate.py) and `megabyte
eval`: every mode scores every byte of the data exactly once; sliding with stride = context is
plain; strided picks the right pass; one bpb definition for the loader's evaluation and the
windows'; the loader's rows are scored whole, PerceiverAR's by plain windows of the row."""

import dataclasses
import math
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from loader_datasets import clips, images, text_docs, write_shards, write_text
from model import PRESETS, build_model
from model.weights import save_weights
from pipeline.format.errors import UsageError
from pipeline.load.loader import LoaderConfig, build_validation_loader
from tools.cli import main as cli
from train.evaluate import MODALITIES, evaluate, target_nats
from train.windows import (Mode, Stream, dataset_streams, eval_modes, evaluate_streams, patch_statistics,
                           stream_jobs)

CPU = torch.device("cpu")


def small(name: str, **fields):
    """A tiny preset cut down to a 64-byte context (16 latents for PerceiverAR), 2 narrow layers."""
    config = PRESETS[name]
    sizes = dict(global_dim=64, global_heads=2, local_dim=32, local_heads=2)
    layers = dict(global_layers=2 if config.global_layers else 0, local_layers=2 if config.local_layers else 0)
    fields = {"seq_len": 64, "dropout": 0.0, **sizes, **layers, **({"latents": 16} if config.latents else {}),
              **fields}
    return dataclasses.replace(config, **fields)


def pieces(ids: np.ndarray, seed: int) -> list[np.ndarray]:
    """A stream cut at random places, as documents arrive."""
    cuts = np.sort(np.random.default_rng(seed).integers(0, len(ids) + 1, 5))
    return np.split(ids, cuts)


def times_scored(config, mode: Mode, length: int, seed: int = 0) -> np.ndarray:
    counts = np.zeros(length, dtype=int)
    for job in stream_jobs(Stream(pieces(np.arange(length), seed)), config, mode):
        assert len(job.ids) == len(job.scored) <= config.seq_len
        assert (job.ids == np.arange(job.start, job.start + len(job.ids))).all()  # the stream's own ids
        counts[job.start + np.flatnonzero(job.scored)] += 1
    return counts


@pytest.mark.parametrize("name, strided, sliding", [
    ("tiny", True, 24), ("tiny", True, 64), ("tiny", False, 5), ("tiny-no-local", True, 16),
    ("tiny-no-global", True, 40), ("tiny-transformer", False, 7), ("tiny-perceiver-ar", False, None),
    ("tiny-perceiver-ar", False, 16), ("tiny-perceiver-ar", False, 3),
])
@pytest.mark.parametrize("length", [1, 5, 63, 64, 65, 200, 333])
def test_every_mode_scores_every_byte_exactly_once(name, strided, sliding, length):
    config = small(name)
    modes = eval_modes(config, strided, sliding)
    assert len(modes) == 1 + strided + (sliding is not None or name == "tiny-perceiver-ar") * (1 + strided)
    for mode in modes:
        assert (times_scored(config, mode, length, seed=length) == 1).all(), mode


def test_sliding_with_the_context_as_stride_is_plain_and_plain_tiles_the_stream():
    config = small("tiny")
    stream = np.arange(200)
    plain = [(j.start, len(j.ids)) for j in stream_jobs(Stream([stream]), config, Mode("plain", 64))]
    assert plain == [(0, 64), (64, 64), (128, 64), (192, 8)]  # the loader's rows
    slid = [(j.start, len(j.ids)) for j in stream_jobs(Stream([stream]), config, Mode("sliding 64", 64))]
    assert slid == plain
    # a smaller stride: every window but the first is full, and scores its last `stride` bytes
    jobs = list(stream_jobs(Stream([stream]), config, Mode("sliding 24", 24)))
    assert [(j.start, int(j.scored.sum())) for j in jobs[:3]] == [(0, 64), (24, 24), (48, 24)]
    assert all(j.scored[-24:].all() and not j.scored[:-24].any() for j in jobs[1:-1])


def test_perceiver_ar_windows_only_score_the_positions_its_forward_predicts():
    config = small("tiny-perceiver-ar")  # 64 bytes, 16 latents
    [plain, sliding] = eval_modes(config, False, None)
    assert (plain.stride, sliding.stride, sliding.name) == (16, 8, "sliding 8")  # latents/2 by default
    for mode in (plain, sliding):
        for job in stream_jobs(Stream([np.arange(300)]), config, mode):
            predicted = min(16, len(job.ids))  # the forward contract: the last min(latents, T) positions
            assert not job.scored[:len(job.ids) - predicted].any()
    torch.manual_seed(0)
    model = build_model(config)
    ids = np.random.default_rng(0).integers(0, 256, 300)
    results = evaluate_streams(model, lambda: [[ids]], [plain, sliding], CPU, batch_size=4,
                               progress=False)
    assert results["plain"]["targets"] == results["sliding 8"]["targets"] == 300
    assert results["sliding 8"]["positions"] > results["plain"]["positions"]


class Unigram(nn.Module):
    """The same logits at every position: each byte's loss depends on the byte alone."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.logits = nn.Parameter(torch.randn(config.vocab_size, generator=torch.Generator().manual_seed(0)))

    def forward(self, ids):
        return self.logits.expand(*ids.shape, -1)  # (B, T, V)


class HalfPatchOracle(nn.Module):
    """Knows the byte it predicts, but only in the first half of each patch (uniform elsewhere):
    a stand-in for MegaByte's loss rising towards the end of a patch."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, ids):
        B, T = ids.shape
        P = self.config.patch_size
        logits = torch.zeros(B, T, self.config.vocab_size)
        first_half = torch.arange(T) % P < P // 2  # (T,)
        logits[:, first_half] = 30.0 * nn.functional.one_hot(ids[:, first_half], self.config.vocab_size)
        return logits


def test_strided_equals_plain_when_the_loss_ignores_the_offset_and_picks_the_first_half_pass():
    config = small("tiny")  # P = 8
    ids = np.random.default_rng(1).integers(0, 256, 250)
    modes = eval_modes(config, True, 16)
    results = evaluate_streams(Unigram(config), lambda: [pieces(ids, 3)], modes, CPU, batch_size=3,
                               progress=False)
    expected = -torch.log_softmax(Unigram(config).logits, 0)[torch.from_numpy(ids)].double().sum().item()
    for result in results.values():  # one byte scored twice or at the wrong place: off by ~6 nats
        assert result["targets"] == 250 and result["nats"] == pytest.approx(expected, abs=1e-3)
    oracle = evaluate_streams(HalfPatchOracle(config), lambda: [[ids]], modes, CPU, batch_size=3,
                              progress=False)
    second_half = (np.arange(250) % 64 % 8 >= 4).sum()  # plain windows start at multiples of 64
    assert oracle["plain"]["bpb"] == pytest.approx(second_half * np.log2(258) / 250)  # uniform there
    assert oracle["strided"]["bpb"] < 1e-6 and oracle["sliding 16 + strided"]["bpb"] < 1e-6
    assert oracle["strided"]["positions"] < 2 * oracle["plain"]["positions"]  # a pass without P/2 bytes


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("eval") / "val", text_docs(40, seed=5), shard_bytes=1500)


@pytest.mark.parametrize("name", ["tiny", "tiny-transformer", "tiny-perceiver-ar", "tiny-cross-patch"])
def test_plain_windows_and_the_validation_loader_give_one_bpb(text_dataset, name):
    torch.manual_seed(0)
    config = small(name)
    model = build_model(config).eval()
    loader = build_validation_loader(LoaderConfig(validation=str(text_dataset), seq_len=config.seq_len,
                                                  patch_size=config.patch_size, micro_batch_size=64,
                                                  num_workers=0))
    by_loader = evaluate(model, loader, CPU)
    by_windows = evaluate_streams(model, lambda: dataset_streams(text_dataset, config), eval_modes(config, False, 64
                                  if config.architecture != "perceiver_ar" else 16), CPU, batch_size=5,
                                  progress=False)
    documents = 40
    payload = sum(len(d) for d in text_docs(40, seed=5))
    assert by_loader["targets"] == by_windows["plain"]["targets"] == payload + documents  # bytes + ends
    if config.architecture != "perceiver_ar":  # its plain windows past the first row reach into the row before
        assert by_windows["plain"]["bpb"] == pytest.approx(by_loader["bpb"], rel=1e-6)
        assert by_windows["sliding 64"]["bpb"] == pytest.approx(by_loader["bpb"], rel=1e-6)


def validation_batch(config) -> dict:
    """Three rows of the loader's shape, one per modality, one of them ending in PAD."""
    ids = torch.randint(0, 256, (3, config.seq_len), generator=torch.Generator().manual_seed(1))  # (3, T)
    ids[1, 50:] = config.pad_id
    return {"ids": ids, "modality": list(MODALITIES)}


@pytest.mark.parametrize("latents", [16, 24, 48])  # 24: the last window is [8, 64), 48: [32, 64)
def test_perceiver_ar_validation_scores_every_byte_of_a_row_by_its_plain_windows(latents):
    torch.manual_seed(0)
    config = small("tiny-perceiver-ar", latents=latents)  # 64 bytes
    model = build_model(config).eval()
    batch = validation_batch(config)
    result = evaluate(model, [batch], CPU)
    assert result["targets"] == int((batch["ids"] != config.pad_id).sum()) == 64 + 50 + 64
    # by hand: position p is scored by the plain window that ends at the first multiple e of N
    # above it, [e - 64, e) cut to the row; the logits of a window of w ids are for its last min(N, w)
    by_modality = {}
    for row, modality in zip(batch["ids"], batch["modality"]):
        nats = 0.0
        for p in range(int((row != config.pad_id).sum())):
            end = (p // latents + 1) * latents
            window = row[max(0, end - 64):min(end, 64)]
            logits = model(window[None])[0]  # (min(N, len(window)), V)
            nats -= torch.log_softmax(logits[p - (min(end, 64) - len(logits))].double(), -1)[row[p]].item()
        by_modality[modality] = nats
    assert result["bpb/image"] == pytest.approx(by_modality["image"] / 50 / math.log(2), rel=1e-5)
    assert result["bpb"] == pytest.approx(sum(by_modality.values()) / (64 + 50 + 64) / math.log(2), rel=1e-5)
    # and so it is `megabyte eval`'s plain mode on each row as a stream of its own
    plain = eval_modes(config, False, None)[:1]
    rows = evaluate_streams(model, lambda: [[row.numpy()] for row in batch["ids"]], plain, CPU, progress=False)
    assert rows["plain"]["targets"] == result["targets"] and rows["plain"]["bpb"] == pytest.approx(result["bpb"])


@pytest.mark.parametrize("name", ["tiny", "tiny-transformer", "tiny-no-global", "tiny-cnn"])
def test_the_validation_of_models_that_predict_every_byte_is_one_forward_per_row(name):
    torch.manual_seed(0)
    config = small(name)
    model = build_model(config).eval()
    batch = validation_batch(config)
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    result = evaluate(model, [batch], CPU)
    assert calls == [(3, 64)]
    nats, counted = target_nats(model(batch["ids"]), batch["ids"])  # (3, 64) each
    for row, modality in enumerate(batch["modality"]):
        expected = nats[row].sum().double().item() / counted[row].sum().item() / math.log(2)
        assert result[f"bpb/{modality}"] == pytest.approx(expected, rel=1e-12)
    assert result["targets"] == int(counted.sum())


def test_evaluation_says_on_stderr_that_it_runs_unless_told_not_to(capsys, monkeypatch):
    config = small("tiny")
    model, ids = Unigram(config), np.random.default_rng(1).integers(0, 256, 250)
    modes = eval_modes(config, True, None)
    evaluate_streams(model, lambda: [[ids]], modes, CPU, progress=False)
    assert capsys.readouterr().err == ""
    results = evaluate_streams(model, lambda: [[ids]], modes, CPU, total_ids=250)  # a log: a line at each end
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and lines[0::2] == ["evaluating plain windows ...", "evaluating strided windows ..."]
    for line, result in zip(lines[1::2], results.values()):
        assert re.fullmatch(rf"\.\.\. done: 250 bytes in [0-9.]+ s \([0-9,]+ bytes/s\), {result['bpb']:.4f} bpb",
                            line), line
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a bar per mode, left with its bpb
    evaluate_streams(model, lambda: [[ids]], modes, CPU, total_ids=250)
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    for name, result in results.items():
        assert any(line.startswith(f"evaluating {name} windows: 100%") and f"{result['bpb']:.4f} bpb" in line
                   for line in bars), bars


def test_image_and_audio_samples_are_streams_of_their_own(tmp_path):
    config = small("tiny", seq_len=48 * 8, patch_size=8)
    image_dir = write_shards(tmp_path / "img", "image", images(5, 8), per_shard=2)  # 192-byte images
    streams = [np.concatenate(list(s)) for s in dataset_streams(image_dir, config)]
    assert [len(s) for s in streams] == [192] * 5
    audio = clips(4, seed=3)
    audio_dir = write_shards(tmp_path / "audio", "audio", audio, per_shard=3)
    streams = [np.concatenate(list(s)) for s in dataset_streams(audio_dir, config)]
    assert [s.tobytes() for s in map(lambda s: s.astype(np.uint8), streams)] == [a for a, _ in audio]
    limited = [np.concatenate(list(s)) for s in dataset_streams(audio_dir, config, max_ids=len(audio[0][0]) + 3)]
    assert [len(s) for s in limited] == [len(audio[0][0]), 3]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in ("tiny", "tiny-transformer", "tiny-perceiver-ar"):
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.safetensors"
        save_weights(build_model(small(name)), paths[name], {"modality": "text"})
    return paths


def test_eval_prints_plain_strided_and_sliding_side_by_side(weights, text_dataset, capsys):
    assert cli(["eval", str(weights["tiny"]), "--data", str(text_dataset), "--strided", "--sliding", "32",
                "--batch-size", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    payload = sum(len(d) for d in text_docs(40, seed=5))
    assert lines[0].startswith(f"{text_dataset}: {payload + 40:,} targets")
    rows = {line[:26].strip(): line[26:].split() for line in lines[2:]}
    assert list(rows) == ["plain", "strided", "sliding 32", "sliding 32 + strided"]
    assert rows["plain"][1] == "1.00×" and all(0 < float(bpb) < 9 for bpb, *_ in rows.values())
    assert cli(["eval", str(weights["tiny-perceiver-ar"]), "--data", str(text_dataset)]) == 0
    assert "sliding 8" in capsys.readouterr().out  # PerceiverAR: latents/2 unless told


@pytest.mark.parametrize("name, flags, message", [
    ("tiny-transformer", ["--strided"], "--strided shifts the patch grid by P/2: it needs a model with patches"),
    ("tiny-perceiver-ar", ["--strided"], "this one is perceiver_ar"),
    ("tiny", ["--sliding", "65"], "--sliding 65: the stride must be 1 to 64"),
    ("tiny-perceiver-ar", ["--sliding", "17"], "the stride must be 1 to 16, the positions one window predicts (latents"),
])
def test_eval_options_the_paper_does_not_define_are_one_error_line(weights, text_dataset, capsys, name, flags,
                                                                    message):
    assert cli(["eval", str(weights[name]), "--data", str(text_dataset), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_eval_modes_refuse_strided_without_patches():
    with pytest.raises(UsageError, match="patch_size=1"):
        eval_modes(small("tiny", patch_size=1, global_dim=32, global_heads=2, local_cross_patch=0), True, None)


def test_patch_statistics_count_spacebytes_patches_as_its_plain_windows_forwards_do():
    """"abc " × 10 in 16-byte windows with T_G = 2: a full window reads 15 bytes, so 3 spaces (3
    boundaries, the third with no global position: its 4 targets untrained); the last 8-byte window
    reads one. 40 targets, 7 boundaries, 8 untrained."""
    model = build_model(small("tiny-spacebyte", seq_len=16, global_len=2)).eval()
    stream = np.frombuffer(b"abc " * 10, dtype=np.uint8).astype(np.int64)
    statistics = patch_statistics(model, [pieces(stream, 0)])
    assert statistics == {"mean_patch_bytes": 40 / 7, "untrained_fraction": 8 / 40}
    untrained = 0.0  # the forwards' own figure, weighted by their targets
    for start in (0, 16, 32):
        window = torch.from_numpy(stream[start:start + 16])[None]  # (1, w)
        model(window)
        untrained += model.untrained_fraction.item() * window.shape[1]
    assert untrained / 40 == pytest.approx(statistics["untrained_fraction"])
