"""What converters produce, and the helpers of converters whose inputs are whole files.

    converter.make_tasks(indexed files) ──▶ tasks (picklable: paths, or batches of documents)
    converter.run_task(task, encoder)   ──▶ TaskResult: Samples in order, skipped inputs, bytes read
                                            (in a worker process: see pipeline.convert.pool)

A sample's key is `<file index>-<item index>` over the sorted input list (sample_key), so keys
are unique, dot-free and the same in a --part split as in one run. A payload larger than
SPILL_BYTES goes to a spill file in the output directory rather than through a pipe.
"""

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.format.shards import payload_compressor

SPILL_BYTES = 32 << 20  # encoded payloads larger than this go to a spill file, not through a pipe


@dataclass
class Sample:
    key: str  # unique in the dataset, no dot
    payload: bytes | Path | None  # the encoded member, or a spill file holding it
    length: int  # length of the byte stream (decoded payload)
    meta: dict
    members: bytes | None = None  # the sample as tar bytes, made in the worker (see run_task)


def sample_key(file_index: int, item_index: int) -> str:
    """`<file index>-<item index>` over the sorted input list: unique, dot-free, and the same in
    a --part split as in one run."""
    return f"{file_index:08d}-{item_index:09d}"


@dataclass
class TaskResult:
    samples: list[Sample] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # [{"source": ..., "reason": ...}]
    source_bytes: int = 0  # input bytes this task consumed, for the progress bar


class Encoder:
    """Turns a byte stream into its stored member: zstd at `level`, or raw with "none".

    Built inside each worker (a zstd context cannot be pickled). Large outputs spill to a file in
    the output directory so that no large document crosses a pipe or sits in memory twice.
    """

    def __init__(self, compression: str, level: int, spill_dir: Path):
        self.compression = compression
        self.level = level
        self.spill_dir = Path(spill_dir)
        self._cctx = payload_compressor(level) if compression == "zstd" else None

    def encode(self, data: bytes) -> bytes | Path:
        """One document already in memory → its member (a spill file past SPILL_BYTES)."""
        out = self._cctx.compress(data) if self._cctx else bytes(data)
        if len(out) <= SPILL_BYTES:
            return out
        path = self._spill_path()
        path.write_bytes(out)
        return path

    def encode_stream(self, chunks) -> tuple[bytes | Path, int]:
        """Encode an iterable of byte chunks; returns (payload, length).

        Up to SPILL_BYTES the stream is encoded in one piece (the zstd frame then records its
        content size, which some readers need); past that it is compressed chunk by chunk into a
        spill file, never held whole.
        """
        chunks = iter(chunks)
        head, length = [], 0
        for chunk in chunks:
            head.append(chunk)
            length += len(chunk)
            if length > SPILL_BYTES:
                break
        else:
            return self.encode(b"".join(head)), length
        compressor = self._cctx.compressobj() if self._cctx else None
        path = self._spill_path()
        try:
            with open(path, "wb") as f:
                for chunk in head:
                    f.write(compressor.compress(chunk) if compressor else chunk)
                head.clear()
                for chunk in chunks:
                    length += len(chunk)
                    f.write(compressor.compress(chunk) if compressor else chunk)
                if compressor:
                    f.write(compressor.flush())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, length

    def _spill_path(self) -> Path:
        return self.spill_dir / f".spill-{uuid.uuid4().hex}.tmp"


def discard(sample: Sample) -> None:
    if isinstance(sample.payload, Path):
        sample.payload.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# converters whose inputs are whole files (image, audio, text files): batches of files, a skip per
# bad file


class SkipInput(Exception):
    """Raised while converting one input file: it is bad; the message is the manifest's reason."""


@dataclass
class FileItem:
    file_index: int  # position in the sorted input list: the first half of its sample keys
    path: Path
    size: int  # bytes, for the progress bar


def batch_files(indexed_files, max_files: int, max_bytes: int):
    """(file_index, path) pairs → lists of FileItem of at most `max_files` files and about
    `max_bytes` source bytes (a larger file is a batch of its own). One task per batch keeps the
    pool's per-task cost small beside the work; batches depend only on the inputs, so a resumed
    run finds the same tasks."""
    batch, held = [], 0
    for file_index, path in indexed_files:
        size = path.stat().st_size
        if batch and (len(batch) >= max_files or held + size > max_bytes):
            yield batch
            batch, held = [], 0
        batch.append(FileItem(file_index, path, size))
        held += size
    if batch:
        yield batch


def run_file_batch(files: list[FileItem], convert_file) -> TaskResult:
    """`convert_file(position, item) -> list[Sample]` over a batch: an empty file or a SkipInput
    becomes a skip entry naming the file, and the batch goes on."""
    result = TaskResult()
    for position, item in enumerate(files):
        try:
            if item.size == 0:
                raise SkipInput("empty file")
            result.samples += convert_file(position, item)
        except SkipInput as skip:
            result.skipped.append({"source": str(item.path), "reason": str(skip)})
        result.source_bytes += item.size
    return result
