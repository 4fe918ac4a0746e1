"""Text converter: plain-text files and JSONL, optionally .gz / .zst / .xz, to byte-stream shards.

    plain files (PG-19 layout) ─▶ tasks of up to ~4 MiB of files ─▶ worker streams each file
                                  through the encoder
    JSONL (one doc per line)   ─▶ main process reads lines, batches ~4 MiB of docs per task
                                  ─▶ worker encodes each document

Each document's bytes are kept exactly as in the source: a plain file's raw bytes (invalid UTF-8
is fine), or the UTF-8 bytes of a JSONL line's string field. Keys are `<file index>-<doc index>`
over the sorted input list, so a --part split and its merge give the same keys as one run.
"""

import gzip
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pipeline.convert import Sample, TaskResult, sample_key

COMPRESSION_SUFFIXES = (".gz", ".zst", ".xz")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
READ_CHUNK = 1 << 20
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
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True,
                                                          closefd=True)
    return open(path, "rb")


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
    files: list[tuple[int, Path]]  # (file index, path); small files share a task, cheaper IPC


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
        batch, held = PlainFilesTask([]), 0
        for file_index, path in indexed_files:
            if is_jsonl(path):
                yield from self.jsonl_tasks(file_index, path)
                continue
            batch.files.append((file_index, path))
            held += path.stat().st_size
            if held >= DOCS_PER_TASK_BYTES or len(batch.files) >= FILES_PER_TASK:
                yield batch
                batch, held = PlainFilesTask([]), 0
        if batch.files:
            yield batch

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
        result = TaskResult()
        for file_index, path in task.files:
            sample, skip, size = read_plain_file(file_index, path, encoder)
            result.samples += [sample] if sample else []
            result.skipped += [skip] if skip else []
            result.source_bytes += size
        return result


def read_plain_file(file_index: int, path: Path, encoder) -> tuple[Sample | None, dict | None, int]:
    """One document per file, streamed through the encoder: (sample, skip record, bytes read)."""
    source = str(path)
    try:
        size = path.stat().st_size

        def chunks():
            with open_source(path) as f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk

        payload, length = encoder.encode_stream(chunks())
    except READ_ERRORS as error:
        return None, {"source": source, "reason": read_error_reason(error)}, 0
    if length == 0:
        return None, {"source": source, "reason": "empty file"}, size
    meta = {"modality": "text", "source": source, "length": length}
    return Sample(sample_key(file_index, 0), payload, length, meta), None, size
