"""One dataset read in order: Source (its shards and how its samples become sequences) and
StreamReader, which packs the samples of a list of pieces (shard, first sample, end sample) into
sequences from a cursor (piece, sample, offset, carry). The validation pass reads this way
(pipeline.load.validation); the train loader reads samples at their offsets instead
(pipeline.load.order, pipeline.load.reading.SampleReader).
"""

from dataclasses import dataclass

from pipeline.format import storage
from pipeline.load.packing import Transform, make_packer
from pipeline.load.reading import ErrorPolicy, ShardRef, read_tokens
from pipeline.format.manifest import load_manifest

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
        self.arguments = manifest.arguments
        self.samples = sum(s.samples for s in manifest.shards)
        self.seq_len = seq_len
        self.text_packing = text_packing
        self.transform = Transform(manifest.modality, seq_len, patch_size, image_order)

    def dataset_meta(self, length: int) -> dict:
        """Metadata that stands for any sample of this dataset of `length` bytes (audio: the
        encoding the dataset was converted to)."""
        encoding = self.arguments.get("encoding")
        return {"length": length, **({"encoding": encoding} if isinstance(encoding, str) else {})}

    def packer(self, carry=()):
        return make_packer(self.modality, self.text_packing, seq_len=self.seq_len, carry=carry)


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
