"""The conversion driver shared by every modality: inputs → tasks → workers → shards → manifest.

    SRC paths/globs ──expand_sources──▶ sorted input files ──part_files──▶ the --part i/n subset
          │                                                                (file_index % n == i)
          ▼
    converter.make_tasks(files)          main process; cheap (paths, or batches of JSONL docs)
          │  run_tasks: a bounded window of tasks in flight
          ▼
    converter.run_task(task, encoder)    worker processes: read, decode, transform, compress, and
          │  results in task order       format the tar members (pipeline.format.shards)
          ▼
    write_results ─▶ ShardSequence ──cut at --shard-size──▶ NAME-000000.tar, … ──▶ index.json

Deterministic: tasks, samples and shard cuts depend only on the inputs and the arguments (never
on --workers), so the shards are byte-identical whatever the parallelism. Resumable: after each
shard, a journal `.progress.json` records the shards so far and the cursor (task, sample) where the
next shard begins; a re-run with the same arguments skips the work before the cursor and goes on,
yielding the same shards as an uninterrupted run. The journal is removed once index.json exists.
The output may be a URL (s3://, gs://, …): pipeline.convert.output stages and uploads the files.
"""

import ctypes
import fnmatch
import glob
import json
import logging
import multiprocessing
import os
import signal
import sys
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.convert.output import Output
from pipeline.format.errors import DataError, UsageError
from pipeline.format.manifest import INDEX_NAME, Manifest, ShardInfo, check_name, load_manifest, shard_name
from pipeline.format.shards import ShardWriter, payload_compressor, sample_members

log = logging.getLogger("megabyte.convert")

JOURNAL_NAME = ".progress.json"
SPILL_BYTES = 32 << 20  # encoded payloads larger than this go to a spill file, not through a pipe
PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent dies


# ---------------------------------------------------------------------------------------------
# what converters produce


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


# ---------------------------------------------------------------------------------------------
# converters whose inputs are whole files (image, audio): batches of files, a skip per bad file


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


# ---------------------------------------------------------------------------------------------
# inputs


def expand_sources(sources: list[str], include: str | None = None,
                   exclude: list[str] = ()) -> list[Path]:
    """Files, directories (recursive) and globs → a sorted, de-duplicated list of files.

    Inside directories, `include` keeps the file names matching a glob (e.g. "*.py") and
    `exclude` drops the paths, relative to the directory, matching any of its globs (e.g.
    "site-packages/*"). A source that does not exist, or a glob that matches nothing, is a
    UsageError.
    """
    files = set()
    for source in sources:
        if glob.has_magic(source):
            matches = [Path(p) for p in glob.glob(source, recursive=True)]
            if not matches:
                raise UsageError(f"{source}: the pattern matches no file")
        elif os.path.exists(source):
            matches = [Path(source)]
        else:
            raise UsageError(f"{source}: no such file or directory")
        for match in matches:
            if match.is_dir():
                files.update(p for p in match.rglob(include or "*") if p.is_file() and not any(
                    fnmatch.fnmatch(str(p.relative_to(match)), pattern) for pattern in exclude))
            elif match.is_file():
                files.add(match)
    if not files:
        raise UsageError(f"no input files found in {' '.join(sources)}")
    return sorted(files)


def parse_part(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 <= i < n; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--part {text}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UsageError(f"--part {text}: need 0 <= i < n")
    return i, n


def parse_size(text: str) -> int:
    """'256MiB', '64K', '1G', '4096' → bytes (binary multiples)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1] if number and number[-1] in units else ""
    try:
        value = int(float(number[: len(number) - len(unit)]) * units[unit])
    except ValueError:
        raise UsageError(f"{text!r} is not a size (examples: 256MiB, 64K, 1G)") from None
    if value <= 0:
        raise UsageError(f"size {text!r} must be positive")
    return value


# ---------------------------------------------------------------------------------------------
# the driver


@dataclass
class ConvertOptions:
    out: Path | str  # a directory, or a URL (s3://, gs://, …: see pipeline.convert.output)
    name: str
    shard_bytes: int = 256 << 20
    compression: str = "zstd"  # "zstd" | "none"
    level: int = 3
    workers: int = 1
    part: tuple[int, int] = (0, 1)
    strict: bool = False
    progress: bool = True

    def __post_init__(self):
        check_name(self.name)


def prepare_output(output: Output, arguments: dict) -> dict | None:
    """Check the output directory; return the journal to resume from (None: a fresh start).

    Returns {"done": manifest} when the same conversion already finished there.
    """
    out = output.location
    output.prepare()
    if output.exists(INDEX_NAME):
        manifest = load_manifest(out)
        if manifest.arguments != arguments:
            raise UsageError(f"{out}: holds a finished conversion made with other arguments; "
                             "choose another --out")
        return {"done": manifest}
    for stray in [*output.local.glob(".*.tmp"), *output.local.glob(".*.tmp.*")]:
        stray.unlink()  # a shard, spill or journal cut off by a kill (temporary_path, Encoder)
    if output.exists(JOURNAL_NAME):
        journal = read_journal(output)
        if journal["arguments"] != arguments:
            raise UsageError(f"{out}: holds an unfinished conversion made with other arguments; "
                             "rerun it with the same arguments, or choose another --out")
        return journal
    if output.names():
        raise UsageError(f"{out}: the output directory is not empty")
    return None


def read_journal(output: Output) -> dict:
    """The journal of an unfinished conversion, checked: its shard entries go into the manifest."""
    path = output.where(JOURNAL_NAME)
    try:
        journal = json.loads(output.read_text(JOURNAL_NAME))
        journal["shards"] = [ShardInfo.from_dict(s) for s in journal["shards"]]
        task, sample = journal["cursor"]
        if not (isinstance(journal["arguments"], dict) and isinstance(journal["skipped"], list)
                and type(task) is int and type(sample) is int):
            raise ValueError("arguments, skipped or cursor of the wrong type")
        return journal
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UsageError(f"{path}: not a valid conversion journal ({error}); remove the output "
                         "directory and convert again") from None


def convert(converter, files: list[Path], options: ConvertOptions, arguments: dict) -> Manifest:
    """Run one conversion (or resume it) and return its manifest.

    converter: an object with `modality`, `make_tasks(indexed_files)` yielding picklable tasks,
    and a picklable `run_task(task, encoder) -> TaskResult`.
    arguments: the converter arguments recorded in the manifest; a resume must match them.
    """
    output = Output(options.out)
    try:
        return convert_to(output, converter, files, options, arguments)
    finally:
        output.close()


def convert_to(output: Output, converter, files: list[Path], options: ConvertOptions,
               arguments: dict) -> Manifest:
    journal = prepare_output(output, arguments)
    if journal and "done" in journal:
        log.info(f"{options.out}: already converted ({journal['done'].totals['samples']} samples)")
        return journal["done"]
    manifest = Manifest(options.name, converter.modality, arguments)
    cursor = resume_point(output, manifest, journal)
    indexed_files = part_files(files, options.part)
    shards = ShardSequence(options, output, manifest)
    bar = progress_bar(converter.modality, indexed_files, options.progress)
    results = run_tasks(converter, converter.make_tasks(indexed_files), options, output.local, cursor[0])
    try:
        with logging_redirect_tqdm():
            write_results(results, cursor, shards, bar, options.strict)
        shards.close()
        output.save_json(INDEX_NAME, manifest.to_dict())
        output.remove(JOURNAL_NAME)
    except OSError as error:  # disk full, output removed…: what is written so far stays resumable
        where = error.filename or options.out
        raise UsageError(f"{where}: cannot write ({error.strerror or error}); the shards so far are "
                         "kept: rerun the same command to go on") from None
    finally:
        bar.close()
        results.close()
        shards.abort()
    return manifest


def resume_point(output: Output, manifest: Manifest, journal: dict | None) -> tuple[int, int]:
    """The cursor (task, sample) where writing goes on. Resuming, `manifest` takes the journal's
    shards and skipped inputs; starting afresh, the empty manifest's journal is written first, so
    that a kill between the first shard and its journal entry stays resumable."""
    if journal is None:
        save_journal(output, manifest, (0, 0))
        return 0, 0
    manifest.shards = journal["shards"]
    manifest.skipped = journal["skipped"]
    log.info(f"{output.location}: resuming after {len(manifest.shards)} complete shards")
    task, sample = journal["cursor"]
    return task, sample


def part_files(files: list[Path], part: tuple[int, int]) -> list[tuple[int, Path]]:
    """(file index, path) of the files in part i of n: those whose index is i modulo n."""
    part_index, part_count = part
    return [(i, f) for i, f in enumerate(files) if i % part_count == part_index]


def progress_bar(modality: str, indexed_files, enabled: bool) -> tqdm:
    """A bar over the source bytes of the files to convert."""
    total = sum(f.stat().st_size for _, f in indexed_files)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"convert {modality}",
                disable=not enabled, smoothing=0.1)


def write_results(results, cursor: tuple[int, int], shards: "ShardSequence", bar: tqdm,
                  strict: bool) -> None:
    """Task results in order → shards; the samples before `cursor` were written before a resume."""
    cursor_task, cursor_sample = cursor
    for task_index, result in results:
        first = cursor_sample if task_index == cursor_task else 0
        for sample_index, sample in enumerate(result.samples):
            if sample_index < first:
                discard(sample)
            else:
                shards.add(sample, (task_index, sample_index + 1))
        record_skips(shards.manifest, result.skipped, strict)
        bar.update(result.source_bytes)


def record_skips(manifest: Manifest, skipped: list[dict], strict: bool) -> None:
    """Warn about skipped inputs and list them in the manifest; under --strict the first stops."""
    for skip in skipped:
        log.warning(f"warning: skipped {skip['source']}: {skip['reason']}")
        if strict:
            raise DataError(f"{skip['source']}: {skip['reason']} (--strict)")
    manifest.skipped.extend(skipped)


class ShardSequence:
    """Samples → NAME-000000.tar, NAME-000001.tar, …: a shard is cut once it reaches
    options.shard_bytes, then listed in the manifest and in the journal, with the cursor after
    its last sample."""

    def __init__(self, options: ConvertOptions, output: Output, manifest: Manifest):
        self.options = options
        self.output = output
        self.manifest = manifest
        self.writer = None

    def add(self, sample: Sample, cursor_after: tuple[int, int]) -> None:
        options = self.options
        if self.writer is None:
            name = shard_name(options.name, len(self.manifest.shards))
            self.writer = ShardWriter(self.output.local / name)
        if sample.members is not None:
            self.writer.add_members(sample.members, sample.length)
        else:  # a spill file: copied into the tar from disk
            self.writer.add(sample.key, options.compression, sample.payload, sample.length, sample.meta)
        if self.writer.file_bytes >= options.shard_bytes:
            self.close()
            save_journal(self.output, self.manifest, cursor_after)

    def close(self) -> None:
        """Publish the shard being written, if any (for a URL: upload it), and list it in the
        manifest."""
        if self.writer is not None:
            info = self.writer.close()
            self.writer = None
            self.output.publish(info.name)
            self.manifest.shards.append(info)

    def abort(self) -> None:
        """Remove the unfinished shard, if any (after close, nothing is left to remove)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def discard(sample: Sample) -> None:
    if isinstance(sample.payload, Path):
        sample.payload.unlink(missing_ok=True)


def save_journal(output: Output, manifest: Manifest, cursor: tuple[int, int]) -> None:
    output.save_json(JOURNAL_NAME, {
        "arguments": manifest.arguments,
        "shards": [vars(s) for s in manifest.shards],
        "skipped": manifest.skipped,
        "cursor": list(cursor),
    })


# ---------------------------------------------------------------------------------------------
# running tasks, in-process or on a pool, results in task order


_worker_encoder = None


def _init_worker(parent: int, compression: str, level: int, spill_dir: Path) -> None:
    global _worker_encoder
    die_with_parent(parent)
    _worker_encoder = Encoder(compression, level, spill_dir)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux). A killed converter
    would otherwise leave its workers waiting for tasks forever, and with them multiprocessing's
    resource tracker, which ends when the last process holding its pipe does."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning(f"worker {os.getpid()}: prctl failed ({os.strerror(ctypes.get_errno())}); "
                        "it will outlive a killed converter")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _run_in_worker(run_task, task) -> TaskResult:
    return run_task_formatted(run_task, task, _worker_encoder)


def run_task_formatted(run_task, task, encoder: Encoder) -> TaskResult:
    """Run a task and turn each in-memory sample into its tar member bytes right there, in the
    worker: the process writing the shards then only appends, hashes and writes."""
    result = run_task(task, encoder)
    for sample in result.samples:
        if isinstance(sample.payload, bytes):
            sample.members = sample_members(sample.key, encoder.compression, sample.payload, sample.meta)
            sample.payload = None
    return result


def run_tasks(converter, tasks, options: ConvertOptions, spill_dir: Path, first_task: int):
    """Yield (task_index, TaskResult) in task order; tasks before `first_task` are not run.
    Large payloads spill to files in `spill_dir`.

    With workers > 1, at most 2 * workers tasks are in flight, so memory stays bounded whatever
    the corpus size.
    """
    encoder_args = (options.compression, options.level, spill_dir)
    if options.workers <= 1:
        encoder = Encoder(*encoder_args)
        for task_index, task in enumerate(tasks):
            if task_index >= first_task:
                yield task_index, run_task_formatted(converter.run_task, task, encoder)
        return
    # spawn, not fork: the parent may hold threads (torch, tqdm) that fork would copy mid-lock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(options.workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(), *encoder_args)) as pool:
        in_flight = deque()
        try:
            for task_index, task in enumerate(tasks):
                if task_index < first_task:
                    continue
                in_flight.append((task_index, pool.submit(_run_in_worker, converter.run_task, task)))
                if len(in_flight) >= 2 * options.workers:
                    index, future = in_flight.popleft()
                    yield index, future.result()
            while in_flight:
                index, future = in_flight.popleft()
                yield index, future.result()
        finally:
            for _, future in in_flight:
                future.cancel()
