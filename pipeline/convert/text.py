"""Text converter: plain-text files and JSONL, optionally .gz / .zst / .xz, to byte-stream shards.

    plain files (PG-19 layout) ─▶ tasks of up to ~4 MiB of files ─▶ worker streams each file
                                  through the encoder
    JSONL (one doc per line)   ─▶ main process reads lines, batches ~4 MiB of docs per task
                                  ─▶ worker encodes each document

Each document's bytes are kept exactly as in the source: a plain file's raw bytes (invalid UTF-8
is fine), or the UTF-8 bytes of a JSONL line's string field. Keys are `<file index>-<line number>`
(0 for a plain file) over the sorted input list, so a --part split and its merge give the same keys
as one run.
"""

import gzip
import io
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pipeline.convert.samples import (FileItem, Sample, SkipInput, TaskResult, batch_files, run_file_batch,
                                      sample_key)

COMPRESSION_SUFFIXES = (".gz", ".zst", ".xz")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
READ_CHUNK = 1 << 20
ZSTD_INPUT_STEP = 1 << 13
DOCS_PER_TASK_BYTES = 4 << 20
FILES_PER_TASK = 256
# what a broken or unreadable source raises while being read
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)


def open_source(path: Path):
    """A binary reader of the decompressed source, chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".zst":
        return io.BufferedReader(ZstdFrames(path), READ_CHUNK)
    return open(path, "rb")


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file, frame after frame. A file that ends inside a frame
    is an EOFError, as gzip and lzma raise: zstandard's stream reader would end there silently,
    and half a document would pass for a whole one."""

    def __init__(self, path: Path):
        self.file = open(path, "rb")
        self.dctx = zstandard.ZstdDecompressor()
        self.frame = None  # the current frame's decompressor; None between frames
        self.out, self.position = b"", 0  # decompressed bytes, and how many were returned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.position == len(self.out):
            # a small step of input keeps one call's output bounded: a zstd block of a few bytes
            # expands to at most 128 KiB
            data = self.file.read(ZSTD_INPUT_STEP)
            if not data:
                if self.frame is not None:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            self.out, self.position = self.decompress(data), 0
        size = min(len(buffer), len(self.out) - self.position)
        buffer[:size] = self.out[self.position:self.position + size]
        self.position += size
        return size

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self.frame = self.frame or self.dctx.decompressobj()
            out.append(self.frame.decompress(data))
            if not self.frame.eof:
                break
            data, self.frame = self.frame.unused_data, None  # the next frame starts here
        return b"".join(out)

    def close(self) -> None:
        self.file.close()
        super().close()


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.endswith(JSONL_SUFFIXES)


def read_error_reason(error: Exception) -> str:
    kind = "unreadable" if isinstance(error, PermissionError) else "broken or unreadable"
    return f"{kind} ({type(error).__name__}: {error})"


@dataclass
class PlainFilesTask:
    files: list[FileItem]  # small files share a task: cheaper IPC


@dataclass
class DocsTask:
    file_index: int
    path: Path
    docs: list[tuple[int, bytes]]  # (line number, document bytes)
    skipped: list[dict]  # problems found while reading these lines
    source_bytes: int


class TextConverter:
    modality = "text"

    def __init__(self, field: str = "text"):
        self.field = field

    def make_tasks(self, indexed_files):
        plain = []  # (file index, path): batched once the JSONL files, read here, are done
        for file_index, path in indexed_files:
            if is_jsonl(path):
                yield from self.jsonl_tasks(file_index, path)
            else:
                plain.append((file_index, path))
        for batch in batch_files(plain, FILES_PER_TASK, DOCS_PER_TASK_BYTES):
            yield PlainFilesTask(batch)

    def jsonl_tasks(self, file_index: int, path: Path):
        """Read a JSONL file line by line in the main process; yield batches of documents."""
        task = DocsTask(file_index, path, [], [], 0)
        held = file_bytes = 0
        try:
            with open_source(path) as f:
                for line_number, line in enumerate(f, start=1):
                    task.source_bytes += len(line)
                    file_bytes += len(line)
                    doc, reason = self.parse_line(line)
                    if reason:
                        task.skipped.append({"source": f"{path}:{line_number}", "reason": reason})
                    elif doc is not None:
                        task.docs.append((line_number, doc))
                        held += len(doc)
                    if held >= DOCS_PER_TASK_BYTES:
                        yield task
                        task, held = DocsTask(file_index, path, [], [], 0), 0
        except READ_ERRORS as error:
            task.skipped.append({"source": str(path), "reason": read_error_reason(error)})
        if file_bytes == 0 and not task.skipped:
            task.skipped.append({"source": str(path), "reason": "empty file"})
        yield task

    def parse_line(self, line: bytes) -> tuple[bytes | None, str | None]:
        """(document bytes, None), (None, skip reason), or (None, None) for a blank line."""
        if not line.strip():
            return None, None
        try:
            record = json.loads(line)
        except ValueError:
            return None, "not valid JSON"
        if not isinstance(record, dict) or self.field not in record:
            return None, f"no field {self.field!r}"
        value = record[self.field]
        if not isinstance(value, str):
            return None, f"field {self.field!r} is {type(value).__name__}, not a string"
        if not value:
            return None, "empty document"
        # surrogatepass: a lone \\udXXX escape in the JSON keeps its bytes rather than failing
        return value.encode("utf-8", "surrogatepass"), None

    @staticmethod
    def run_task(task, encoder) -> TaskResult:
        if isinstance(task, DocsTask):
            samples = [Sample(sample_key(task.file_index, line), encoder.encode(doc), len(doc),
                              {"modality": "text", "source": str(task.path), "line": line,
                               "length": len(doc)})
                       for line, doc in task.docs]
            return TaskResult(samples, task.skipped, task.source_bytes)
        return run_file_batch(task.files, lambda _, item: [read_plain_file(item, encoder)])


def read_plain_file(item: FileItem, encoder) -> Sample:
    """One document per file, streamed through the encoder (never read whole into memory)."""

    def chunks():
        with open_source(item.path) as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk

    try:
        payload, length = encoder.encode_stream(chunks())
    except READ_ERRORS as error:
        raise SkipInput(read_error_reason(error)) from None
    if length == 0:  # a compressed file holding nothing
        raise SkipInput("empty file")
    meta = {"modality": "text", "source": str(item.path), "length": length}
    return Sample(sample_key(item.file_index, 0), payload, length, meta)
