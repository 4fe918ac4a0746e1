"""Packing: one sample's bytes → sequences of at most T ids → (B, T) batches padded with PAD.

    (meta, bytes) ──Transform──▶ Tokens: the sample's ids, read as a flat stream
        text   the document's bytes, then BOUNDARY (a real, predicted token)
        image  raw RGB in raster order, or the paper's patch scan (pipeline.format.scan)
        audio  the stored bytes; windows are whole audio samples (pipeline.format.audio_codec)
    Tokens ──packer.step──▶ a sequence: a list of parts (uint8/uint16 arrays) of ≤ T ids in all
        ConcatPacker   documents joined and cut every T ids; the rest carries over to the next
        WindowPacker   every sample cut alone into windows (one document / image per sequence)
    sequences ──to_ids──▶ int64 (B, T), each row PAD after its ids        (in the main process)
    sequences ──encode_rows──▶ uint8 rows + lengths + the few ids > 255   (from DataLoader workers:
              ──decode_rows──▶ int64 (B, T)                               an eighth of the bytes)

PAD is only ever appended at the end of a row, so `ids != PAD_ID` is the loss mask. An image
padded to T is also padded to a multiple of P (T is one). A packer step reports the offset it
reached inside the sample, so a cursor (sample, offset, carry) says exactly where packing is.
"""

import base64

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.format.audio_codec import DEFAULT_ENCODING, bytes_per_sample
from pipeline.format.errors import DataError
from pipeline.format.scan import to_patch_order
from pipeline.format.vocab import BOUNDARY_ID, PAD_ID

BOUNDARY_PART = np.array([BOUNDARY_ID], dtype=np.uint16)


class Tokens:
    """A sample as a flat stream of ids: `data` (uint8 bytes, or PAD ids), then `tail` ids.

    `window` is how many ids one sequence takes from it under WindowPacker.
    """

    __slots__ = ("data", "tail", "window")

    def __init__(self, data: np.ndarray, tail: np.ndarray | None, window: int):
        self.data = data
        self.tail = tail
        self.window = window

    def __len__(self) -> int:
        return len(self.data) + (0 if self.tail is None else len(self.tail))

    def slice(self, start: int, stop: int) -> list[np.ndarray]:
        """The ids start..stop-1 as parts, without copying the bytes."""
        parts, n = [], len(self.data)
        if start < n:
            parts.append(self.data[start:min(stop, n)])
        if self.tail is not None and stop > n:
            parts.append(self.tail[max(start - n, 0):stop - n])
        return parts


def placeholder(ids: int, window: int) -> Tokens:
    """Stands for a sample that could not be read: PAD ids of its length, as a view of one id
    (nothing allocated), so it keeps its place and counts for nothing."""
    return Tokens(np.broadcast_to(np.uint16(PAD_ID), (ids,)), None, window)


class Transform:
    """Modality transform: (meta, payload bytes) → Tokens. Picklable (plain settings only).

    A payload of None stands for a sample that could not be read but whose place must be kept
    (validation): its ids are all PAD, so it counts for nothing.
    """

    def __init__(self, modality: str, seq_len: int, patch_size: int, image_order: str = "raster"):
        if modality not in ("text", "image", "audio"):
            raise ValueError(f"unknown modality {modality!r}: expected text, image or audio")
        self.modality = modality
        self.seq_len = seq_len
        self.patch_size = patch_size
        self.image_order = image_order

    def id_count(self, length):
        """Ids a sample of `length` bytes makes (an int, or an array of them): text adds BOUNDARY."""
        return length + 1 if self.modality == "text" else length

    def length_and_window(self, meta: dict) -> tuple[int, int]:
        """(number of ids, window) of a sample, from its metadata alone."""
        length = meta["length"]
        if self.modality == "text":
            return self.id_count(length), self.seq_len
        if self.modality == "image":  # one longer than T is cut into T-byte segments, each a
            return length, self.seq_len  # sequence of its own (the paper's image baselines)
        frame = bytes_per_sample(meta.get("encoding", DEFAULT_ENCODING))  # one audio sample: never split
        if self.seq_len < frame:
            raise ValueError(f"seq_len {self.seq_len} is shorter than one {frame}-byte audio frame")
        return length, self.seq_len - self.seq_len % frame

    def __call__(self, meta: dict, payload: bytes | None) -> Tokens:
        if meta.get("modality") != self.modality:
            raise DataError(f"sample of modality {meta.get('modality')!r} in a {self.modality} dataset")
        length, window = self.length_and_window(meta)
        if payload is None:
            return placeholder(length, window)
        data = np.frombuffer(payload, dtype=np.uint8)
        if self.modality == "text":
            return Tokens(data, BOUNDARY_PART, window)
        if self.modality == "image" and self.image_order == "patch":
            size, width, channels = meta.get("height"), meta.get("width"), meta.get("channels", 3)
            if not (type(size) is int and size == width and channels == 3 and 3 * size * size == len(data)):
                raise DataError(f"patch-scan order needs square RGB images of their length, got "
                                f"{size}×{width}×{channels} for {len(data)} bytes")
            try:
                data = to_patch_order(data, size, self.patch_size)
            except ValueError as error:  # the image side is not a multiple of the block side
                raise DataError(str(error)) from None
        return Tokens(data, None, window)


class ConcatPacker:
    """Documents joined and cut into sequences of exactly T ids; the leftover is the carry."""

    def __init__(self, seq_len: int, carry: list[np.ndarray] = ()):
        self.seq_len = seq_len
        self.carry = list(carry)
        self.carry_len = sum(len(part) for part in self.carry)

    def step(self, tokens: Tokens, offset: int) -> tuple[list[np.ndarray] | None, int]:
        """Take ids from `offset` until a sequence is full or the sample ends: (sequence, offset)."""
        take = min(self.seq_len - self.carry_len, len(tokens) - offset)
        self.carry += tokens.slice(offset, offset + take)
        self.carry_len += take
        if self.carry_len < self.seq_len:
            return None, offset + take
        sequence, self.carry, self.carry_len = self.carry, [], 0
        return sequence, offset + take

    def flush(self) -> list[np.ndarray] | None:
        """The last, partial sequence (PAD-padded later), or None when nothing is left."""
        sequence, self.carry, self.carry_len = self.carry, [], 0
        return sequence or None


class WindowPacker:
    """Each sample cut alone into windows of `tokens.window` ids: nothing carries over."""

    carry = ()  # always empty

    def __init__(self, seq_len: int, carry: list[np.ndarray] = ()):
        if carry:
            raise ValueError("a window packer never carries ids between samples")
        self.seq_len = seq_len

    def step(self, tokens: Tokens, offset: int) -> tuple[list[np.ndarray], int]:
        stop = min(offset + tokens.window, len(tokens))
        return tokens.slice(offset, stop), stop

    def flush(self) -> None:
        return None


def make_packer(modality: str, text_packing: str, seq_len: int, carry=()):
    concat = modality == "text" and text_packing == "concat"
    return (ConcatPacker if concat else WindowPacker)(seq_len, carry)


def encode_carry(carry: list[np.ndarray]) -> str:
    """A carry as a short JSON-able string: base64 of its ids as little-endian uint16."""
    if not carry:
        return ""
    ids = np.concatenate([part.astype("<u2") for part in carry])
    return base64.b64encode(ids.tobytes()).decode("ascii")


def decode_carry(text: str) -> list[np.ndarray]:
    return [np.frombuffer(base64.b64decode(text), dtype="<u2")] if text else []


def write_rows(sequences: list[list[np.ndarray]], out: np.ndarray) -> tuple[list[int], list]:
    """Write each sequence's ids at the start of a row of `out`: (row lengths, specials), where
    specials are the (row, column, id) of ids above 255 when `out` is uint8 (they wrap there)."""
    lengths, special = [], []
    for row, parts in enumerate(sequences):
        position = 0
        for part in parts:
            out[row, position:position + len(part)] = part
            if out.dtype == np.uint8 and part.dtype != np.uint8:
                special += [(row, position + int(c), int(part[c])) for c in np.flatnonzero(part > 255)]
            position += len(part)
        lengths.append(position)
    return lengths, special


def to_ids(sequences: list[list[np.ndarray]], seq_len: int) -> torch.Tensor:
    """Sequences → LongTensor (n, T), PAD after each sequence's ids."""
    ids = np.empty((len(sequences), seq_len), dtype=np.int64)
    for row, length in enumerate(write_rows(sequences, ids)[0]):
        ids[row, length:] = PAD_ID
    return torch.from_numpy(ids)


def encode_rows(sequences: list[list[np.ndarray]], seq_len: int) -> dict:
    """Sequences → compact rows to pass between processes (an eighth of int64 ids): the bytes as
    uint8 (n, T), each row's length (PAD after it), and the ids above 255 as (row, column, id)."""
    data = np.zeros((len(sequences), seq_len), dtype=np.uint8)
    lengths, special = write_rows(sequences, data)
    return {"bytes": torch.from_numpy(data), "lengths": torch.tensor(lengths, dtype=torch.int32),
            "special": torch.tensor(special, dtype=torch.int32).reshape(-1, 3)}


def rows_to_yield(sequences: list[list[np.ndarray]], seq_len: int) -> dict:
    """{"ids": LongTensor} in the main process; in a DataLoader worker, whose output crosses to
    the main process, the compact encode_rows form. decode_rows turns either into ids."""
    if get_worker_info() is None:
        return {"ids": to_ids(sequences, seq_len)}
    return encode_rows(sequences, seq_len)


def decode_rows(rows: dict, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows start..stop-1 of encode_rows (or to_ids) output → LongTensor (n, T), PAD after each
    row's length."""
    if "ids" in rows:
        return rows["ids"][start:stop]
    ids = rows["bytes"][start:stop].numpy().astype(np.int64)  # numpy: one thread, whatever torch says
    for row, length in enumerate(rows["lengths"][start:stop].tolist()):
        ids[row, length:] = PAD_ID
    special = rows["special"].numpy()
    special = special[(special[:, 0] >= start) & (special[:, 0] < start + len(ids))]
    ids[special[:, 0] - start, special[:, 1]] = special[:, 2]
    return torch.from_numpy(ids)


def keep(batch):
    """collate_fn for batches made whole by the dataset (torch's default walks every list)."""
    return batch
