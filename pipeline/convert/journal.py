"""Resuming a conversion: the output directory's state, and the journal `.progress.json`.

    output directory ──prepare_output──▶ finished (index.json, same arguments): nothing to do
                                         unfinished (journal, same arguments): resume from it
                                         empty: a fresh start; anything else: refused
    after each shard ──save_journal──▶ {arguments, shards so far, skipped, cursor (task, sample)}

The cursor is where the next shard begins; a re-run with the same arguments skips the work before
it and goes on, yielding the same shards as an uninterrupted run. The journal is removed once
index.json exists. Temporary files a kill left (a shard, a spill, a journal) are removed first.
"""

import json
import logging

from pipeline.convert.output import Output
from pipeline.format.errors import UsageError
from pipeline.format.manifest import INDEX_NAME, Manifest, ShardInfo, load_manifest

log = logging.getLogger("megabyte.convert")

JOURNAL_NAME = ".progress.json"


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


def save_journal(output: Output, manifest: Manifest, cursor: tuple[int, int]) -> None:
    output.save_json(JOURNAL_NAME, {
        "arguments": manifest.arguments,
        "shards": [vars(s) for s in manifest.shards],
        "skipped": manifest.skipped,
        "cursor": list(cursor),
    })
