"""Reading shards for the loader: check → members → samples → bytes → Tokens.

    shard ──ShardRef.check──▶ file size and (verify) sha256 as in the manifest, once per process
      ──iter_members──▶ samples start..stop-1 as {extension: bytes}; samples before `start` are
      │                passed over without reading their members into memory
      ──parse_meta, decode_payload──▶ meta + payload, decompression bounded by the metadata
      │                length, itself bounded by the shard's longest sample in the manifest
      │                (sample_bound: the shard's payload bytes if it has none)
      ──Transform──▶ (sample index, Tokens)                              = read_tokens
The stages before Transform are pipeline.format.reader's, the one reader of the shard format.

SampleReader reads single samples at their offsets instead (the train loader's random access,
pipeline.load.order): it seeks to a sample with its member index, and keeps the last samples
decoded (a long document is read by several sequences in a row) and the shard files open. A
shard with a member index is checked by its size and by what each read checks (tar header
checksums, the zstd frame's checksum, the metadata length against the index), so a rank reads
only its own samples; one without (older datasets) also by its sha256, once per process.

Bad data follows an ErrorPolicy: "raise" (the default) raises DataError naming the shard and the
sample key; "skip" logs each problem, counts it and drops what it spoils: the whole shard for a
failed check, the rest of the shard for a broken tar, the one sample for a bad member.
"""

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.format import storage
from pipeline.format.errors import DataError
from pipeline.format.manifest import ShardInfo, sample_bound
from pipeline.format.member_index import read_members_at
from pipeline.format.reader import (check_shard, decode_payload, iter_members, iter_metas, parse_meta,
                                    sample_error, unreadable)
from pipeline.load.packing import Tokens, placeholder

log = logging.getLogger("megabyte.loader")


@dataclass(frozen=True)
class ShardRef:
    path: str
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


class SampleReader:
    """One dataset's samples by number (rows of its SampleTable), as Tokens; bad ones per `policy`,
    as PAD ids of their length (placeholder) so that every sequence keeps its place.

    prefetch(samples) reads the members of the samples a fetch will need all at once, PREFETCH
    reads in flight, when the dataset is at a URL: there each read waits on a round trip, and
    one after the other they would leave the loader waiting on latency, not bandwidth."""

    PREFETCH = 16  # reads in flight at a time, for a dataset at a URL

    def __init__(self, source, table, *, verify: bool, policy: ErrorPolicy,
                 keep_bytes: int = 64 << 20, open_files: int = 16):
        self.source, self.table = source, table
        self.verify, self.policy = verify, policy
        self.keep_bytes, self.open_files = keep_bytes, open_files
        self._kept = OrderedDict()  # sample → Tokens, the most recently used last
        self._fetched = {}  # sample → (key, members), or the DataError reading them raised
        self._files = threading.local()  # each thread's open shard files
        self._checked = {}  # shard path → None, or what is wrong with it
        self._bad = set()  # samples found bad
        self._usable = int((table.ids > 0).sum())
        self._kept_ids = 0
        self._pool = None  # threads for prefetch, started on first use
        self._remote = storage.is_url(source.directory)

    def prefetch(self, samples) -> None:
        """Read the members of these samples (those not kept) concurrently, for `tokens`."""
        wanted = [s for s in dict.fromkeys(samples) if s not in self._kept and s not in self._fetched]
        if len(wanted) < 2 or not self._remote:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.PREFETCH, thread_name_prefix="prefetch")
        for sample, members in zip(wanted, self._pool.map(self._members_or_error, wanted)):
            self._fetched[sample] = members

    def tokens(self, sample: int) -> Tokens:
        if sample in self._kept:
            self._kept.move_to_end(sample)
            return self._kept[sample]
        try:
            tokens = self._decode(sample, self._fetched.pop(sample, None) or self._members_or_error(sample))
        except storage.StorageError:
            raise  # the storage could not be reached: not bad data to skip
        except DataError as error:
            self.policy.handle(error)
            self._bad.add(sample)
            if len(self._bad) == self._usable:
                raise DataError(f"{self.source.directory}: all {self._usable} samples are bad; there "
                                "is nothing left to train on") from None
            tokens = placeholder(int(self.table.ids[sample]), self.table.window)
        self._kept[sample] = tokens
        self._kept_ids += len(tokens)
        while self._kept_ids > self.keep_bytes and len(self._kept) > 1:
            self._kept_ids -= len(self._kept.popitem(last=False)[1])
        return tokens

    def _members_or_error(self, sample: int):
        """(key, members) of a sample, read at its offset; or the DataError that stopped it."""
        table = self.table
        shard = self.source.shards[int(table.shard[sample])]
        try:
            return read_members_at(self._file(shard), int(table.offset[sample]), int(table.size[sample]))
        except storage.StorageError as error:
            return error
        except DataError as error:
            return DataError(f"{shard.path}: {error}")

    def _decode(self, sample: int, members) -> Tokens:
        if isinstance(members, DataError):
            raise members
        key, members = members
        table = self.table
        shard = self.source.shards[int(table.shard[sample])]
        try:
            meta = parse_meta(members, sample_bound(shard.info))
            if meta["length"] != table.length[sample]:
                raise DataError(f"metadata length {meta['length']}, the member index says "
                                f"{int(table.length[sample])}")
            tokens = self.source.transform(meta, decode_payload(members, meta["length"]))
        except DataError as error:
            raise sample_error(shard.path, key, error) from None
        if tokens.window != table.window:
            raise sample_error(shard.path, key, DataError(
                f"makes windows of {tokens.window} ids, the dataset's are {table.window} (another "
                "audio encoding?)"))
        return tokens

    def _file(self, shard: ShardRef):
        """This thread's open file of the shard, checked once per process (see the module
        docstring)."""
        if shard.path not in self._checked:
            try:
                shard.check(self.verify and shard.info.index_sha256 is None)
                self._checked[shard.path] = None
            except DataError as error:
                self._checked[shard.path] = error
        if self._checked[shard.path] is not None:
            raise self._checked[shard.path]
        files = self._files.__dict__.setdefault("open", OrderedDict())
        if shard.path not in files:
            if len(files) >= self.open_files:
                files.popitem(last=False)[1].close()
            try:
                files[shard.path] = storage.open_binary(shard.path)
            except OSError as error:
                raise unreadable(shard.path, error) from None
        files.move_to_end(shard.path)
        return files[shard.path]
