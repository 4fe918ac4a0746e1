"""The conversion driver shared by every modality: inputs → tasks → workers → shards → manifest.

    SRC paths/globs ──expand_sources──▶ sorted input files ──part_files──▶ the --part i/n subset
          │                                                  (pipeline.convert.inputs)
          ▼
    converter.make_tasks(files)          main process; cheap (paths, or batches of JSONL docs)
          │  run_tasks: a bounded window of tasks in flight (pipeline.convert.pool)
          ▼
    converter.run_task(task, encoder)    worker processes: read, decode, transform, compress, and
          │  results in task order       format the tar members (pipeline.format.shards)
          ▼
    write_results ─▶ ShardSequence ──cut at --shard-size──▶ NAME-000000.tar, … ──▶ index.json

Deterministic: tasks, samples and shard cuts depend only on the inputs and the arguments (never
on --workers), so the shards are byte-identical whatever the parallelism. Resumable: after each
shard the journal records where the next one begins (pipeline.convert.journal), so a re-run with
the same arguments yields the same shards as an uninterrupted run. The output may be a URL
(s3://, gs://, …): pipeline.convert.output stages and uploads the files.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.convert.inputs import part_files
from pipeline.convert.journal import JOURNAL_NAME, prepare_output, resume_point, save_journal
from pipeline.convert.output import Output
from pipeline.convert.pool import run_tasks
from pipeline.convert.samples import Sample, discard
from pipeline.format.errors import DataError, UsageError
from pipeline.format.manifest import INDEX_NAME, Manifest, check_name, shard_name
from pipeline.format.shards import ShardWriter

log = logging.getLogger("megabyte.convert")


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
    results = run_tasks(converter, converter.make_tasks(indexed_files), first_task=cursor[0],
                        workers=options.workers, compression=options.compression, level=options.level,
                        spill_dir=output.local)
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
