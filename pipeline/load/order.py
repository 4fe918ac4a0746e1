"""The global order of training sequences: one seeded order that depends only on the seed, the
datasets, their weights, the sequence length and the piece length; never on the number of ranks,
workers or the batch size. So a run resumes on another cluster shape and goes on with the same
stream of sequences.

    dataset ──SampleTable──▶ every sample: shard, offset and member bytes (from the shards' member
      │    indexes, pipeline.format.reader), ids and window (pipeline.load.packing.Transform)
      ──pieces──▶ samples cut into pieces of at most piece_len ids (at window boundaries where a
      │           sample is cut into windows): what is shuffled. A document, image or clip is one
      │           piece unless it is longer than that.
    epoch e of dataset d: its pieces permuted by a generator seeded (seed, PIECE_ORDER, d, e)
      concatenated text   the pieces' ids joined, epoch after epoch without a seam;
                          sequence k = ids kT .. (k+1)T-1 of that endless stream
      otherwise           each piece cut into windows (one image, or ≤ T ids of a document or
                          clip); sequence k = window k of the endless list of windows
    then the sequences themselves, in fixed blocks of `shuffle_sequences`, each block permuted
      by a generator seeded (seed, SEQUENCE_ORDER, d, block): consecutive sequences come from one
      piece, and a batch of them would hold a few documents only; permuted, a batch draws from
      many. Output number k of the dataset is sequence block·M + π_block(k mod M).
    the global stream: position j = the next sequence of dataset mix(j); Mixer draws the datasets
      with the weights, MIX_CHUNK at a time from a generator seeded (seed, MIX_ORDER, chunk)

Memory is bounded by the index (a few int64 per sample and piece, and one epoch's permutation),
never by the data. A seam between two pieces of long documents joins them like two documents,
without a BOUNDARY between them: with pieces of 8 sequences, about one sequence in eight holds one.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

from pipeline.format.errors import DataError
from pipeline.format.manifest import sample_bound
from pipeline.format.member_index import read_member_index, scan_index

log = logging.getLogger("megabyte.loader")

PIECE_ORDER, MIX_ORDER, SEQUENCE_ORDER = 1, 3, 4  # tags that keep the seeded generators apart
MIX_CHUNK = 4096  # dataset choices drawn at a time


@dataclass
class SampleTable:
    """Every sample of one dataset, in manifest order: where it is and how many ids it makes."""

    shard: np.ndarray  # int32, index into Source.shards
    offset: np.ndarray  # int64, byte offset of its first member in the shard
    size: np.ndarray  # int64, bytes of its members
    length: np.ndarray  # int64, bytes of its byte stream
    ids: np.ndarray  # int64, ids it makes (Transform.id_count)
    window: int  # ids per sequence when cut into windows


def member_index(shard) -> np.ndarray:
    """A shard's member index: its `.idx` file (format v3), or read from its headers before that."""
    if shard.info.index_sha256 is not None:
        return read_member_index(shard.path, shard.info)
    return scan_index(shard.path, sample_bound(shard.info))


def sample_table(source) -> SampleTable:
    """The table of a Source (pipeline.load.streams), from its shards' member indexes."""
    unindexed = sum(shard.info.index_sha256 is None for shard in source.shards)
    if unindexed:
        log.warning(f"{source.directory}: {unindexed} shards have no member index (written before "
                    "format v3): reading their headers to make one")
    indexes = [member_index(shard) for shard in source.shards]
    rows = np.concatenate(indexes) if indexes else np.zeros((0, 3), dtype=np.int64)
    shard = np.repeat(np.arange(len(indexes), dtype=np.int32), [len(index) for index in indexes])
    length = rows[:, 2].astype(np.int64)
    longest = int(length.max()) if len(length) else 0
    _, window = source.transform.length_and_window(source.dataset_meta(longest))  # also checks it fits
    return SampleTable(shard, rows[:, 0].copy(), rows[:, 1].copy(), length,
                       source.transform.id_count(length), window)


@dataclass
class Pieces:
    """The pieces of one dataset: what an epoch permutes. Units are what a position counts: ids
    (concatenated text) or windows (otherwise)."""

    sample: np.ndarray  # int64, the sample each piece is cut from
    start: np.ndarray  # int64, its first id in that sample
    stop: np.ndarray  # int64, one past its last
    units: np.ndarray  # int64, its units

    @property
    def epoch_units(self) -> int:
        return int(self.units.sum())


def cut_pieces(table: SampleTable, piece_len: int, concat: bool) -> Pieces:
    """Each sample cut into pieces of at most piece_len ids; in window mode piece_len is rounded
    down to whole windows (at least one)."""
    if not concat:
        piece_len = max(table.window, piece_len - piece_len % table.window)
    counts = -(-table.ids // piece_len)  # ⌈ids / piece_len⌉; an empty sample has no piece
    sample = np.repeat(np.arange(len(table.ids), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = (np.arange(len(sample), dtype=np.int64) - first) * piece_len
    stop = np.minimum(start + piece_len, table.ids[sample])
    units = stop - start if concat else -(-(stop - start) // table.window)
    return Pieces(sample, start, stop, units)


def recent(cache: dict, key: int, make):
    """cache[key], made by make() when missing; the cache keeps the two highest keys (a stream
    moves forward: its current epoch or block, and the next one it reaches into)."""
    if key not in cache:
        if len(cache) >= 2:
            cache.pop(min(cache))
        cache[key] = make()
    return cache[key]


@dataclass(frozen=True)
class Segment:
    """Ids start..stop-1 of one sample: a sequence is one or more of them."""

    sample: int
    start: int
    stop: int


class DatasetOrder:
    """Dataset d's endless, seeded stream of sequences: output k → its segments and its epoch."""

    def __init__(self, table: SampleTable, pieces: Pieces, *, seq_len: int, concat: bool, seed: int,
                 dataset: int, shuffle_sequences: int = 1):
        self.table, self.pieces = table, pieces
        self.seq_len, self.concat, self.seed, self.dataset = seq_len, concat, seed, dataset
        self.shuffle_sequences = shuffle_sequences
        self.epoch_units = pieces.epoch_units
        self._epochs = {}  # epoch → (piece order, first unit of each piece in that order), recent()
        self._blocks = {}  # block → its permutation of shuffle_sequences, recent()

    def shuffled(self, k: int) -> int:
        """The sequence that output k of this dataset is (see the module docstring)."""
        if self.shuffle_sequences == 1:
            return k
        block, within = divmod(k, self.shuffle_sequences)
        permutation = recent(self._blocks, block, lambda: np.random.default_rng(
            [self.seed, SEQUENCE_ORDER, self.dataset, block]).permutation(self.shuffle_sequences))
        return block * self.shuffle_sequences + int(permutation[within])

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(piece order, first unit of each piece in that order) of an epoch."""
        def make():
            order = np.random.default_rng([self.seed, PIECE_ORDER, self.dataset, epoch]).permutation(
                len(self.pieces.units))
            units = self.pieces.units[order]
            return order, np.cumsum(units) - units
        return recent(self._epochs, epoch, make)

    def _piece_at(self, unit: int) -> tuple[int, int, int]:
        """(epoch, piece, units into it) of unit number `unit` of the endless stream."""
        epoch, within = divmod(unit, self.epoch_units)
        order, starts = self.epoch(epoch)
        place = int(np.searchsorted(starts, within, side="right")) - 1
        return epoch, int(order[place]), within - int(starts[place])

    def output(self, k: int) -> tuple[list[Segment], int]:
        """(segments, epoch) of output k of this dataset: sequence shuffled(k)."""
        return self.sequence(self.shuffled(k))

    def sequence(self, k: int) -> tuple[list[Segment], int]:
        """(segments, epoch) of sequence k; the segments hold T ids, or one window (≤ T)."""
        pieces = self.pieces
        if not self.concat:
            epoch, piece, window = self._piece_at(k)
            start = int(pieces.start[piece]) + window * self.table.window
            stop = min(start + self.table.window, int(pieces.stop[piece]))
            return [Segment(int(pieces.sample[piece]), start, stop)], epoch
        unit, need, segments = k * self.seq_len, self.seq_len, []
        first_epoch = None
        while need:
            epoch, piece, into = self._piece_at(unit)
            first_epoch = epoch if first_epoch is None else first_epoch
            start = int(pieces.start[piece]) + into
            stop = min(int(pieces.stop[piece]), start + need)
            segments.append(Segment(int(pieces.sample[piece]), start, stop))
            need, unit = need - (stop - start), unit + (stop - start)
        return segments, first_epoch


def dataset_order(source, *, piece_len: int, shuffle_sequences: int, seed: int,
                  dataset: int) -> DatasetOrder:
    table = sample_table(source)
    concat = source.text_packing == "concat" and source.modality == "text"
    pieces = cut_pieces(table, piece_len, concat)
    if pieces.epoch_units == 0:
        raise DataError(f"{source.directory}: holds no data to train on ({len(table.ids)} samples, "
                        "all empty)")
    return DatasetOrder(table, pieces, seq_len=source.seq_len, concat=concat, seed=seed, dataset=dataset,
                        shuffle_sequences=shuffle_sequences)


class Mixer:
    """Which dataset gives each position of the global stream, and which of its sequences.

    Position j takes dataset choice(j), drawn with the weights; its sequence number is how many
    positions before j chose that dataset. Walks forward from (position, counts)."""

    def __init__(self, weights: list[float], seed: int, position: int = 0, counts: list[int] | None = None):
        self.weights, self.seed = weights, seed
        self.position = position
        self.counts = np.array(counts if counts is not None else [0] * len(weights), dtype=np.int64)
        self._chunk = (None, None)

    def _choices(self, start: int, stop: int) -> np.ndarray:
        if len(self.weights) == 1:
            return np.zeros(stop - start, dtype=np.int64)
        parts = []
        for chunk in range(start // MIX_CHUNK, math.ceil(stop / MIX_CHUNK)):
            if self._chunk[0] != chunk:
                rng = np.random.default_rng([self.seed, MIX_ORDER, chunk])
                self._chunk = (chunk, rng.choice(len(self.weights), size=MIX_CHUNK, p=self.weights))
            low = max(start - chunk * MIX_CHUNK, 0)
            parts.append(self._chunk[1][low:min(stop - chunk * MIX_CHUNK, MIX_CHUNK)])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def advance(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset, sequence number) of positions self.position..stop-1; then position = stop."""
        if stop < self.position:
            raise ValueError(f"the mixer is at position {self.position}; it cannot go back to {stop}")
        datasets = self._choices(self.position, stop)
        numbers = np.empty_like(datasets)
        for d in range(len(self.weights)):
            mask = datasets == d
            numbers[mask] = self.counts[d] + np.arange(int(mask.sum()))
            self.counts[d] += int(mask.sum())
        self.position = stop
        return datasets, numbers
