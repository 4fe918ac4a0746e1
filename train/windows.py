"""Windowed evaluation of byte streams: plain, sliding-window and strided (MegaByte §2.3, Table 11).

Every mode scores every id of a stream exactly once; they differ in how much context each gets.

    stream ──windows──▶ (start, stop) with stop - start ≤ T; each window scores the positions
      │                 after the previous window's stop, so the scored ranges tile the stream
      │   plain     the windows tile the stream too: [0, T), [T, 2T), ...
      │   sliding   stop advances by a stride S < T, start = stop - T: every scored byte but
      │             the first T has at least T - S bytes of context (Press et al. 2021)
      │   strided   each window runs twice, the second time without its first P/2 bytes, so the
      │             patch grid moves by half a patch; each byte is scored by the pass in which it
      │             sits in the first half of its patch, where MegaByte's loss is lowest (§2.3)
      ▼
    jobs (a window's ids, which of its positions it scores) ──batched by length──▶ model
      ──target_nats──▶ sums of nats and targets → bpb (the definition in train/evaluate.py)

A PerceiverAR forward predicts only its last N = latents positions: its first window is [0, N)
(all of it predicted), then windows grow to T and slide, by at most N. Its default stride is
N/2, as the paper evaluated it; "plain" for it is a stride of N. The in-training validation
(train/evaluate.py, row_nats) runs these plain windows on each of the loader's rows as a stream.

A stream is an iterator of id arrays read lazily: `Stream` keeps only the last T ids that later
windows still need, so a dataset of concatenated documents is never held whole.
"""

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from model.config import PATCHED, MegaByteConfig
from model.progress import Progress
from pipeline.format.errors import UsageError
from pipeline.format.manifest import load_manifest
from pipeline.load.reading import ErrorPolicy, read_tokens
from pipeline.load.streams import Source
from train.evaluate import bpb, target_nats


@dataclass(frozen=True)
class Mode:
    name: str
    stride: int  # how far consecutive windows advance
    strided: bool = False  # two passes per window, the second shifted by half a patch


def predicted_per_window(config: MegaByteConfig) -> int:
    """How many positions a full window's forward predicts (the forward contract's L)."""
    return config.latents if config.architecture == "perceiver_ar" else config.seq_len


def eval_modes(config: MegaByteConfig, strided: bool, sliding: int | None) -> list[Mode]:
    """plain, then what was asked for: strided, sliding S, and both together (Table 11's columns).
    PerceiverAR slides by latents/2 unless told otherwise, as the paper evaluated it."""
    L = predicted_per_window(config)
    if strided and (config.architecture not in PATCHED or config.patch_size < 2):
        raise UsageError(f"--strided shifts the patch grid by P/2: it needs a model with patches of 2 "
                         f"bytes or more ({', '.join(PATCHED)}); this one is {config.architecture} "
                         f"with patch_size={config.patch_size}")
    if sliding is None and config.architecture == "perceiver_ar":
        sliding = max(1, L // 2)
    if sliding is not None and not 1 <= sliding <= L:
        raise UsageError(f"--sliding {sliding}: the stride must be 1 to {L}, the positions one window "
                         f"predicts ({'latents' if L < config.seq_len else 'seq_len'} of this model)")
    modes = [Mode("plain", L)]
    if strided:
        modes.append(Mode("strided", L, strided=True))
    if sliding is not None:
        modes.append(Mode(f"sliding {sliding}", sliding))
        if strided:
            modes.append(Mode(f"sliding {sliding} + strided", sliding, strided=True))
    return modes


class Stream:
    """A stream of ids read piece by piece, holding only the part that windows still need."""

    def __init__(self, pieces: Iterable[np.ndarray]):
        self.pieces = iter(pieces)
        self.buffer = np.zeros(0, dtype=np.int64)
        self.base = 0  # stream position of buffer[0]

    @property
    def end(self) -> int:
        return self.base + len(self.buffer)

    def read_until(self, position: int) -> int:
        """Read pieces until `position` is buffered or the stream ends; min(position, what there is)."""
        parts, end = [self.buffer], self.end
        while end < position and (piece := next(self.pieces, None)) is not None:
            parts.append(np.asarray(piece, dtype=np.int64))
            end += len(piece)
        self.buffer = np.concatenate(parts)
        return min(position, self.end)

    def window(self, start: int, stop: int) -> np.ndarray:
        return self.buffer[start - self.base:stop - self.base]

    def forget_before(self, position: int) -> None:
        drop = min(max(0, position - self.base), len(self.buffer))
        self.buffer, self.base = self.buffer[drop:], self.base + drop


@dataclass
class Job:
    """One forward: a window's ids, the stream position of its first id, and which of its
    positions it scores."""

    ids: np.ndarray  # (w,)
    start: int
    scored: np.ndarray  # (w,) bool


def stream_jobs(stream: Stream, config: MegaByteConfig, mode: Mode) -> Iterator[Job]:
    """The forwards that score every position of the stream once, in the given mode."""
    T, P = config.seq_len, config.patch_size
    done, end = 0, predicted_per_window(config)  # the first window is predicted whole
    while True:
        # the last window is cut short by the stream's end, but starts where it would have
        start, stop = max(0, end - T), stream.read_until(end)
        if stop <= done:
            return
        ids = stream.window(start, stop)
        new = np.arange(start, stop) >= done  # (w,): the positions no window has scored yet
        if not mode.strided:
            yield Job(ids, start, new)
        else:
            shift = P // 2
            first_half = np.arange(len(ids)) % P < P - shift  # in the unshifted pass's patches
            for job in (Job(ids, start, new & first_half),  # the rest by the pass `shift` bytes later:
                        Job(ids[shift:], start + shift, (new & ~first_half)[shift:])):
                if job.scored.any():
                    yield job
        done, end = stop, end + mode.stride
        stream.forget_before(end - T)  # where the next window starts


@torch.no_grad()
def score_jobs(model, jobs: Iterable[Job], device: torch.device, batch_size: int, progress: Progress) -> dict:
    """{"nats", "targets", "positions"}: sums over the scored positions that are not PAD, and the
    ids read by all forwards (the cost). Jobs of one length share a forward; progress advances by
    the positions each forward scores."""
    sums = {"nats": 0.0, "targets": 0, "positions": 0}
    waiting: dict[int, list[Job]] = {}

    def run(batch: list[Job]) -> None:
        ids = torch.from_numpy(np.stack([job.ids for job in batch])).to(device)  # (B, w)
        scored = torch.from_numpy(np.stack([job.scored for job in batch])).to(device)  # (B, w)
        nats, counted = target_nats(model(ids), ids)  # (B, L) each
        L = nats.shape[1]
        assert not scored[:, :ids.shape[1] - L].any(), "a window scores a position its forward does not predict"
        keep = counted & scored[:, ids.shape[1] - L:]  # (B, L)
        sums["nats"] += nats[keep].double().sum().item()
        sums["targets"] += int(keep.sum())
        sums["positions"] += ids.numel()
        progress.update(int(scored.sum()))

    for job in jobs:
        batch = waiting.setdefault(len(job.ids), [])
        batch.append(job)
        if len(batch) == batch_size:
            run(waiting.pop(len(job.ids)))
    for batch in waiting.values():
        run(batch)
    return sums


def evaluate_streams(model, make_streams: Callable[[], Iterable[Iterable[np.ndarray]]], modes: list[Mode],
                     device: torch.device, batch_size: int = 8, progress: bool = True,
                     total_ids: int | None = None) -> dict[str, dict]:
    """mode name → {"bpb", "targets", "positions", "seconds"}; make_streams() gives the streams
    (each an iterable of id arrays) afresh for every mode. progress: each mode shows on stderr as
    it runs (model/progress.py: a bar on a terminal, a line at its start and end elsewhere);
    total_ids, the ids of all streams (dataset_ids), gives the bar its end."""
    was_training = model.training
    model.eval()
    results = {}
    for mode in modes:
        with Progress(f"evaluating {mode.name} windows", total_ids, progress) as shown:
            started = time.perf_counter()
            jobs = (job for pieces in make_streams() for job in stream_jobs(Stream(pieces), model.config, mode))
            sums = score_jobs(model, jobs, device, batch_size, shown)
            results[mode.name] = {**sums, "bpb": bpb(sums["nats"], sums["targets"]),
                                  "seconds": time.perf_counter() - started}  # score_jobs waits for the device
            shown.finish(f"{results[mode.name]['bpb']:.4f} bpb")
    model.train(was_training)
    return results


def patch_statistics(model, streams: Iterable[Iterable[np.ndarray]]) -> dict:
    """SpaceByte's patches on the plain windows of the streams, as its forwards would see them
    (model.patches; no forward runs): {"mean_patch_bytes": targets (ids not PAD) per boundary,
    "untrained_fraction": the share of those targets past a window's T_G global positions}."""
    mode = Mode("plain", model.config.seq_len)
    boundaries = untrained = targets = 0
    for pieces in streams:
        for job in stream_jobs(Stream(pieces), model.config, mode):
            ids = torch.from_numpy(job.ids)[None]  # (1, w)
            boundary, left_out = model.patches(ids)  # (1, w) twice
            boundaries += int(boundary.sum())
            untrained += int(left_out.sum())
            targets += int((ids != model.config.pad_id).sum())
    return {"mean_patch_bytes": targets / max(boundaries, 1), "untrained_fraction": untrained / max(targets, 1)}


def dataset_ids(directory, max_ids: int = 0) -> int:
    """How many ids dataset_streams gives, from the manifest alone: every byte of every sample,
    and each text document's end (the boundary id the text transform appends)."""
    manifest = load_manifest(directory)
    totals = manifest.totals
    ids = totals["payload_bytes"] + (totals["samples"] if manifest.modality == "text" else 0)
    return min(ids, max_ids) if max_ids else ids


def dataset_streams(directory, config: MegaByteConfig, image_order: str = "raster",
                    text_packing: str = "concat", max_ids: int = 0):
    """A dataset's streams as the loader packs it: concatenated text is one stream (documents
    joined by the boundary id), anything else one stream per sample (image, audio clip, document).
    Each stream is an iterator of id arrays. max_ids > 0 stops after that many ids in all."""
    source = Source(directory, seq_len=config.seq_len, patch_size=config.patch_size,
                    image_order=image_order, text_packing=text_packing)

    def samples():
        left = max_ids or math.inf
        for shard in source.shards:
            for _, tokens in read_tokens(shard, 0, shard.info.samples, source.transform, verify=True,
                                         policy=ErrorPolicy("raise")):
                ids = np.concatenate([part.astype(np.int64) for part in tokens.slice(0, len(tokens))])
                yield ids[:min(len(ids), left)]
                left -= len(ids)
                if left <= 0:
                    return

    if source.modality == "text" and text_packing == "concat":
        yield samples()
    else:
        yield from ([ids] for ids in samples())
