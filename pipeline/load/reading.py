"""Reading part of one shard for the loader: check → members → samples → bytes → Tokens.

    shard ──ShardRef.check──▶ file size and sha256 as in the manifest (sha256 once per process)
      ──iter_members──▶ samples start..stop-1 as {extension: bytes}; samples before `start` are
      │                passed over without reading their members into memory
      ──parse_meta, decode_payload──▶ meta + payload, decompression bounded by the metadata
      │                length, itself bounded by the shard's longest sample in the manifest
      │                (sample_bound: the shard's payload bytes for a v1 manifest)
      ──Transform──▶ (sample index, Tokens)                              = read_tokens
The stages before Transform are pipeline.format.reader's, the one reader of the shard format.

Bad data follows an ErrorPolicy: "raise" (the default) raises DataError naming the shard and the
sample key; "skip" logs each problem, counts it and drops what it spoils: the whole shard for a
failed check, the rest of the shard for a broken tar, the one sample for a bad member.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.format.errors import DataError
from pipeline.format.reader import (check_shard, decode_payload, iter_members, iter_metas, parse_meta,
                                    sample_error)
from pipeline.format.shards import ShardInfo, sample_bound

log = logging.getLogger("megabyte.loader")


@dataclass(frozen=True)
class ShardRef:
    path: Path
    info: ShardInfo

    def check(self, verify: bool) -> None:
        """The file must have the manifest's size and, with verify, its sha256."""
        check_shard(self.path, self.info, sha256=verify, cached=True)


class ErrorPolicy:
    """on_error="raise": re-raise; "skip": log the problem with its shard and key, and count it."""

    def __init__(self, on_error: str):
        self.on_error = on_error
        self.count = 0

    def handle(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.count += 1
        log.warning(f"skipped bad data: {error}")


def errors_as_items(items):
    """Yield from `items`; a DataError ends them with one last item {"error": its message}.

    DataLoader workers hand their batches over this way, so that a DataError reaches the main
    process as its one line (torch would re-raise it there wrapped in the worker's traceback);
    raise_error_item raises it again."""
    try:
        yield from items
    except DataError as error:
        yield {"error": str(error)}


def raise_error_item(item: dict) -> dict:
    """The item as it is, or its DataError raised (see errors_as_items)."""
    if "error" in item:
        raise DataError(item["error"])
    return item


def sample_tokens(shard: ShardRef, key: str, members: dict, transform, policy: ErrorPolicy,
                  keep_places: bool):
    """One sample's Tokens; None when it is bad and skipped, or with keep_places, PAD ids of its
    length in its place (when its metadata can still say that length)."""
    meta = None
    try:
        meta = parse_meta(members, sample_bound(shard.info))
        return transform(meta, decode_payload(members, meta["length"]))
    except DataError as error:
        policy.handle(sample_error(shard.path, key, error))
    try:
        return transform(meta, None) if keep_places and meta is not None else None
    except DataError:
        return None


def read_tokens(shard: ShardRef, start: int, stop: int, transform, *, verify: bool,
                policy: ErrorPolicy, keep_places: bool = False):
    """Yield (sample index, Tokens) for samples start..stop-1 of a shard; bad data per `policy`.

    keep_places: a sample whose payload is bad still yields, as PAD ids of its length (validation
    keeps every sample's place so that the ranks' shares never shift).
    """
    try:
        shard.check(verify)
    except DataError as error:
        policy.handle(error)
        return
    members = iter_members(shard.path, start, stop)
    while True:
        try:
            item = next(members, None)
        except DataError as error:
            policy.handle(error)
            return
        if item is None:
            return
        index, key, sample = item
        tokens = sample_tokens(shard, key, sample, transform, policy, keep_places)
        if tokens is not None:
            yield index, tokens


def scan_metas(shard: ShardRef) -> list[dict]:
    """Every sample's metadata, reading only the .json members (for layouts that need lengths)."""
    return [meta for _, meta in iter_metas(shard.path, shard.info.samples,
                                           max_length=sample_bound(shard.info))]
