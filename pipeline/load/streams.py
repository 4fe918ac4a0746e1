"""One dataset as one stream sees it: epochs → pieces → blocks → shuffled sequences, resumable.

A stream is one (rank, DataLoader worker) pair: stream = rank × workers + worker, of
S = world_size × workers (num_workers 0 counts as one worker).

    epoch e: shard order = permutation(seed, dataset, e)        the same on every rank and worker
      │ split over the S streams:
      │   shards ≥ S   round robin: stream s reads the whole shards order[s::S]
      │   shards < S   the samples of the shards, in that order, cut into S contiguous ranges
      │                of ⌊M/S⌋ or ⌈M/S⌉ samples (so no stream is ever without data)
      ▼
    pieces (shard, first sample, end sample)
      ──StreamReader (pipeline.load.reading → pipeline.load.packing)──▶ sequences, cursor after each
      ──blocks of `shuffle_buffer` sequences, each permuted by a numpy Generator seeded from
        (seed, dataset, epoch, stream, block start)──▶ this stream's sequences of epoch e,
        each exactly once; then epoch e + 1 (the carry of concatenated text is flushed, PAD-padded)

Why blocks and not webdataset's rolling shuffle buffer: a rolling buffer holds sequences from
arbitrarily far back, so restoring it means replaying the epoch or saving megabytes of ids. A
block never spans two pieces, so the state is just the block's start cursor (piece, sample,
offset and the < T ids carried into it) plus how many of its sequences were used: a restore
re-reads at most the current shard, and the same seed gives the same order.
"""

from dataclasses import dataclass

import numpy as np

from pipeline.format import storage
from pipeline.format.errors import DataError
from pipeline.load.packing import Transform, decode_carry, encode_carry, make_packer
from pipeline.load.reading import ErrorPolicy, ShardRef, read_tokens
from pipeline.format.shards import load_manifest

SHARD_ORDER, BLOCK_ORDER = 1, 2  # tags that keep the seeded generators apart
PIECE_END, END = "piece end", "end"  # what StreamReader.next says when it has no sequence


@dataclass(frozen=True)
class Piece:
    shard: int  # index in the manifest
    start: int  # first sample
    stop: int  # one past the last sample


@dataclass
class Cursor:
    piece: int
    sample: int
    offset: int  # ids of that sample already packed
    carry: list  # ids packed but not yet in a sequence (concatenated text only)


class Source:
    """One dataset directory: its shards and how its samples become sequences. Picklable."""

    def __init__(self, directory, *, seq_len: int, patch_size: int, image_order: str = "raster",
                 text_packing: str = "concat"):
        manifest = load_manifest(directory)
        self.directory = str(directory)
        self.name = manifest.name
        self.modality = manifest.modality
        self.shards = [ShardRef(storage.join(directory, info.name), info) for info in manifest.shards]
        self.samples = sum(s.samples for s in manifest.shards)
        self.seq_len = seq_len
        self.text_packing = text_packing
        self.transform = Transform(manifest.modality, seq_len, patch_size, image_order)

    def packer(self, carry=()):
        return make_packer(self.modality, self.text_packing, seq_len=self.seq_len, carry=carry)


def epoch_pieces(samples: list[int], *, seed: int, dataset: int, epoch: int, stream: int,
                 streams: int) -> list[Piece]:
    """The pieces stream `stream` of `streams` reads in `epoch` (see the module docstring)."""
    order = np.random.default_rng([seed, SHARD_ORDER, dataset, epoch]).permutation(len(samples))
    if len(order) >= streams:
        return [Piece(int(k), 0, samples[k]) for k in order[stream::streams]]
    total = sum(samples)
    low, high = stream * total // streams, (stream + 1) * total // streams
    pieces, begin = [], 0
    for k in order:
        end = begin + samples[k]
        if max(low, begin) < min(high, end):
            pieces.append(Piece(int(k), max(low, begin) - begin, min(high, end) - begin))
        begin = end
    return pieces


class StreamReader:
    """Sequences packed from a list of pieces, starting at a cursor; `cursor()` says where it is.

    next() returns a sequence (a list of id arrays), PIECE_END when a piece is used up (the carry
    goes on into the next piece) or END after the last piece (whose carry comes out first, as a
    last, short sequence).
    """

    def __init__(self, source: Source, pieces: list[Piece], cursor: Cursor, *, verify: bool,
                 policy: ErrorPolicy, keep_places: bool = False):
        self.source = source
        self.pieces = pieces
        self.piece, self.index, self.offset = cursor.piece, cursor.sample, cursor.offset
        self.packer = source.packer(cursor.carry)
        self.verify = verify
        self.policy = policy
        self.keep_places = keep_places
        self.tokens = None  # the sample being packed, number self.index
        self.samples = None  # (index, Tokens) of the current piece

    def cursor(self) -> Cursor:
        return Cursor(self.piece, self.index, self.offset, list(self.packer.carry))

    def next(self):
        while True:
            if self.tokens is not None:
                sequence, self.offset = self.packer.step(self.tokens, self.offset)
                if self.offset >= len(self.tokens):
                    self.tokens, self.index, self.offset = None, self.index + 1, 0
                if sequence is not None:
                    return sequence
                continue
            if self.piece >= len(self.pieces):
                return END
            if self.samples is None:
                piece = self.pieces[self.piece]
                self.samples = read_tokens(self.source.shards[piece.shard], self.index, piece.stop,
                                           self.source.transform, verify=self.verify,
                                           policy=self.policy, keep_places=self.keep_places)
            item = next(self.samples, None)
            if item is None:
                self.samples, self.piece, self.offset = None, self.piece + 1, 0
                if self.piece < len(self.pieces):
                    self.index = self.pieces[self.piece].start
                    return PIECE_END
                last = self.packer.flush()
                return END if last is None else last
            index, tokens = item
            if index != self.index:  # samples at the cursor were bad and skipped
                self.index, self.offset = index, 0
            if self.offset >= len(tokens):  # an empty sample, or one already used up
                self.index, self.offset = index + 1, 0
            else:
                self.tokens = tokens


@dataclass
class Block:
    epoch: int
    sequences: list
    order: np.ndarray
    end: Cursor | None  # where the next block starts; None: the epoch ends with this block
    errors: int


class DatasetStream:
    """One dataset for one stream, forever: epoch after epoch of shuffled blocks of sequences.

    state (plain ints and a string; all a restore needs):
        epoch, and the start of the current block: piece, sample, offset, carry (packing.encode_carry)
        emitted          sequences of the block already handed out
        epoch_sequences  sequences of this epoch handed out (an epoch must yield one)
        errors           bad data skipped before this block
    """

    def __init__(self, source: Source, dataset: int, *, stream: int, streams: int, seed: int,
                 shuffle_buffer: int, on_error: str, verify: bool):
        self.source = source
        self.dataset = dataset
        self.stream, self.streams, self.seed = stream, streams, seed
        self.shuffle_buffer = shuffle_buffer
        self.on_error, self.verify = on_error, verify
        self._pieces = (None, [])
        self.state = self._epoch_start(0, errors=0)
        self._block: Block | None = None
        self._reader: StreamReader | None = None

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.state) - set(state)
        if missing:
            raise ValueError(f"loader state for dataset {self.source.directory} lacks {sorted(missing)}")
        self.state = {key: state[key] for key in self.state}
        self._block = self._reader = None

    @property
    def errors(self) -> int:
        """Bad data skipped so far (the current block's included)."""
        return self.state["errors"] + (self._block.errors if self._block else 0)

    def pieces(self, epoch: int) -> list[Piece]:
        if self._pieces[0] != epoch:
            samples = [shard.info.samples for shard in self.source.shards]
            self._pieces = (epoch, epoch_pieces(samples, seed=self.seed, dataset=self.dataset,
                                                epoch=epoch, stream=self.stream, streams=self.streams))
        return self._pieces[1]

    def _epoch_start(self, epoch: int, errors: int) -> dict:
        pieces = self.pieces(epoch)
        return {"epoch": epoch, "piece": 0, "sample": pieces[0].start if pieces else 0, "offset": 0,
                "carry": "", "emitted": 0, "epoch_sequences": 0, "errors": errors}

    def next_sequence(self) -> tuple[list, int]:
        """(the next sequence, the epoch it belongs to)."""
        while self._block is None:
            self._block = self._read_block()
            if not self._block.sequences:
                self._finish_block()
        block = self._block
        sequence = block.sequences[block.order[self.state["emitted"]]]
        self.state["emitted"] += 1
        self.state["epoch_sequences"] += 1
        if self.state["emitted"] == len(block.sequences):
            self._finish_block()
        return sequence, block.epoch

    def _read_block(self) -> Block:
        state = self.state
        if self._reader is None:  # a fresh epoch, or a restore: open the piece at the block start
            cursor = Cursor(state["piece"], state["sample"], state["offset"], decode_carry(state["carry"]))
            self._reader = StreamReader(self.source, self.pieces(state["epoch"]), cursor,
                                        verify=self.verify, policy=ErrorPolicy(self.on_error))
        reader = self._reader
        reader.policy.count = 0
        sequences, end = [], None
        while len(sequences) < max(1, self.shuffle_buffer):
            item = reader.next()
            if item is END:
                self._reader = None
                break
            if item is PIECE_END:
                if sequences:
                    end = reader.cursor()
                    break
                # nothing read yet: let the block start in the next piece, so that a restore
                # re-reads only that piece's shard
                self._move_to(reader.cursor(), state["errors"] + reader.policy.count)
                reader.policy.count = 0
                continue
            sequences.append(item)
        else:
            end = reader.cursor()
        seed = [self.seed, BLOCK_ORDER, self.dataset, state["epoch"], self.stream,
                state["piece"], state["sample"], state["offset"]]
        shuffled = self.shuffle_buffer > 1
        order = np.random.default_rng(seed).permutation(len(sequences)) if shuffled else \
            np.arange(len(sequences))
        return Block(state["epoch"], sequences, order, end, reader.policy.count)

    def _move_to(self, cursor: Cursor, errors: int) -> None:
        self.state.update(piece=cursor.piece, sample=cursor.sample, offset=cursor.offset,
                          carry=encode_carry(cursor.carry), emitted=0, errors=errors)

    def _finish_block(self) -> None:
        block, self._block = self._block, None
        errors = self.state["errors"] + block.errors
        if block.end is not None:
            self._move_to(block.end, errors)
            return
        if self.state["epoch_sequences"] == 0:
            raise DataError(f"{self.source.directory}: stream {self.stream} of {self.streams} found no "
                            f"usable sample in epoch {block.epoch} ({errors} bad shards or samples "
                            "skipped so far); there is nothing left to train on")
        self.state = self._epoch_start(block.epoch + 1, errors)
