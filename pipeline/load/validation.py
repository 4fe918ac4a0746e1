"""Validation stream: one deterministic, unshuffled pass that the ranks split without overlap.

    dataset ──make_layout──▶ how many sequences the whole dataset makes, in manifest order,
      │   counted without decompressing anything:
      │     concatenated text   ⌈(payload bytes + documents) / T⌉, from the manifest
      │     image               one per sample, from the manifest
      │     document text, audio   Σ ⌈ids / window⌉ over the samples' metadata (.json members)
      ▼
    n sequences ──split──▶ rank r: [r·k, (r+1)·k) with k = ⌈n / world_size⌉; worker w: a
      │                    contiguous part of that
      ──locate──▶ shard, sample and offset where the part starts (one shard's metadata)
      ──StreamReader (no shuffle)──▶ its sequences, then all-PAD rows up to the part's size
      ──▶ full (B, T) batches {"ids", "modality"}

Every byte of the dataset (and every document boundary) lands in exactly one row of one rank,
and every rank yields the same number of batches, so a distributed eval never waits on a rank
that has finished. With on_error="skip", every rank checks every shard up front (size, sha256,
metadata, the payload bytes the manifest counts) and leaves the bad ones out, the same way on all
ranks; a payload found bad later
becomes PAD ids of its length, so the split does not shift.
"""

import bisect
import itertools
import math
from dataclasses import dataclass

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.format.errors import DataError
from pipeline.load.packing import ConcatPacker, decode_rows, keep, rows_to_yield
from pipeline.load.reading import ErrorPolicy, errors_as_items, raise_error_item, scan_metas
from pipeline.load.streams import END, PIECE_END, Cursor, Piece, Source, StreamReader
from pipeline.load.workers import sigterm_blocked, worker_init_fn


@dataclass
class Layout:
    shards: list[int]  # the shards used, in manifest order
    units: list[int]  # per shard used: ids (concatenated text) or sequences (otherwise)
    concat: bool
    sequences: int  # n, in the whole dataset


def make_layout(source: Source, *, on_error: str, verify: bool) -> Layout:
    concat = isinstance(source.packer(), ConcatPacker)
    needs_metas = not concat and source.modality != "image"
    policy = ErrorPolicy(on_error)
    shards, units = [], []
    for k, shard in enumerate(source.shards):
        metas = None
        if needs_metas or on_error == "skip":
            try:
                shard.check(verify)
                metas = scan_metas(shard)
                payload = sum(meta["length"] for meta in metas)
                if payload != shard.info.payload_bytes:  # what the concatenated layout counts
                    raise DataError(f"{shard.path}: its samples hold {payload} bytes, the manifest "
                                    f"says {shard.info.payload_bytes}")
            except DataError as error:
                policy.handle(error)
                continue
        if concat:
            units.append(shard.info.payload_bytes + shard.info.samples)
        elif source.modality == "image":
            units.append(shard.info.samples)
        else:
            units.append(sum(_sequences_of(source, meta) for meta in metas))
        shards.append(k)
    total = sum(units)
    sequences = math.ceil(total / source.seq_len) if concat else total
    return Layout(shards, units, concat, sequences)


def _sequences_of(source: Source, meta: dict) -> int:
    ids, window = source.transform.length_and_window(meta)
    return math.ceil(ids / window)


def locate(source: Source, layout: Layout, sequence: int) -> tuple[int, int, int]:
    """Where sequence number `sequence` starts: (position in layout.shards, sample, offset)."""
    position = sequence * source.seq_len if layout.concat else sequence
    starts = list(itertools.accumulate(layout.units, initial=0))[:-1]
    j = bisect.bisect_right(starts, position) - 1
    rest = position - starts[j]
    shard = source.shards[layout.shards[j]]
    if source.modality == "image":
        return j, rest, 0
    for sample, meta in enumerate(scan_metas(shard)):
        ids, window = source.transform.length_and_window(meta)
        count = ids if layout.concat else math.ceil(ids / window)
        if rest < count:
            return j, sample, rest if layout.concat else rest * window
        rest -= count
    raise DataError(f"{shard.path}: holds fewer ids than the manifest says")


class ValidationDataset(IterableDataset):
    def __init__(self, source: Source, layout: Layout, *, batch_size: int, rank: int,
                 world_size: int, num_workers: int, on_error: str, verify: bool):
        self.source, self.layout = source, layout
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.workers = max(1, num_workers)
        self.on_error, self.verify = on_error, verify

    def part(self, worker: int) -> tuple[int, int]:
        """The sequence numbers [low, high) of one worker of this rank; high may pass n (PAD rows)."""
        share = math.ceil(self.layout.sequences / self.world_size)
        first = self.rank * share
        return first + worker * share // self.workers, first + (worker + 1) * share // self.workers

    @property
    def num_batches(self) -> int:
        return sum(math.ceil((high - low) / self.batch_size)
                   for low, high in map(self.part, range(self.workers)))

    def sequences(self, low: int, high: int):
        """The dataset's sequences low..high-1, then empty ones (all PAD) past its end."""
        real = max(0, min(high, self.layout.sequences) - low)
        if real:
            policy = ErrorPolicy(self.on_error)
            j, sample, offset = locate(self.source, self.layout, low)
            pieces = [Piece(k, 0, self.source.shards[k].info.samples) for k in self.layout.shards[j:]]
            reader = StreamReader(self.source, pieces, Cursor(0, sample, offset, []),
                                  verify=self.verify, policy=policy, keep_places=True)
            made = 0
            while made < real:
                item = reader.next()
                if item is PIECE_END:
                    continue
                if item is END:
                    policy.handle(DataError(f"{self.source.directory}: ran out after {low + made} of "
                                            f"{self.layout.sequences} sequences: the shards hold "
                                            "less than the manifest says"))
                    break
                made += 1
                yield item
            real = made
        for _ in range(high - low - real):
            yield []

    def __iter__(self):
        return errors_as_items(self._batches())

    def _batches(self):
        info = get_worker_info()
        low, high = self.part(info.id if info is not None else 0)
        rows = []
        for sequence in self.sequences(low, high):
            rows.append(sequence)
            if len(rows) == self.batch_size:
                yield self._batch(rows)
                rows = []
        if rows:
            yield self._batch(rows + [[]] * (self.batch_size - len(rows)))

    def _batch(self, rows: list) -> dict:
        return {**rows_to_yield(rows, self.source.seq_len), "modality": [self.source.modality] * len(rows)}


class ValidationLoader:
    """A finite iterable of batches; len() is the same on every rank."""

    def __init__(self, dataset: ValidationDataset, num_workers: int = 0,
                 multiprocessing_context: str | None = None):
        self.dataset = dataset
        self.dataloader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=keep,
            multiprocessing_context=multiprocessing_context,
            worker_init_fn=worker_init_fn(num_workers))

    def __len__(self) -> int:
        return self.dataset.num_batches

    def __iter__(self):
        with sigterm_blocked():
            batches = iter(self.dataloader)  # starts the workers
        for batch in map(raise_error_item, batches):
            yield {"ids": decode_rows(batch), "modality": batch["modality"]}
