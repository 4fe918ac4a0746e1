"""The local cache of remote shards: whole files in a directory, under a size limit.

    MEGABYTE_CACHE_DIR, MEGABYTE_CACHE_LIMIT (bytes) ──cache_from_env──▶ ShardCache, or None
    ShardCache.open(url, stat) ──▶ the cached copy, opened and pinned (a shared flock), after
                                   downloading it if need be (room made by evicting the least
                                   recently opened entries nobody reads)

Shared by every process on the machine (DataLoader workers, ranks): a file being read holds a
shared flock on its cache entry, and eviction skips entries it cannot lock exclusively, so no
shard is evicted while being read. An entry's name hashes the URL, size and version, so a
replaced remote file is never served from an old copy.
"""

import fcntl
import hashlib
import os
import uuid
from pathlib import Path

from pipeline.format.errors import UsageError
from pipeline.format.remote import MAX_READ, RemoteFile, Stat, url_name

CACHE_DIR_ENV, CACHE_LIMIT_ENV = "MEGABYTE_CACHE_DIR", "MEGABYTE_CACHE_LIMIT"


def parse_limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit <= 0:
        raise UsageError(f"{CACHE_LIMIT_ENV}={text!r}: give the cache size limit in bytes, e.g. "
                         f"{50 << 30} for 50 GiB")
    return limit


def cache_from_env():
    """The cache MEGABYTE_CACHE_DIR / MEGABYTE_CACHE_LIMIT describe, or None when unset.
    DataLoader workers inherit the environment, so they share the cache of their parent."""
    directory = os.environ.get(CACHE_DIR_ENV)
    if not directory:
        return None
    limit = os.environ.get(CACHE_LIMIT_ENV)
    if limit is None:
        raise UsageError(f"{CACHE_DIR_ENV} is set but {CACHE_LIMIT_ENV} is not: give the cache size "
                         "limit in bytes")
    return ShardCache(directory, parse_limit(limit))


class ShardCache:
    """Whole remote files in a local directory, at most `limit` bytes, least recently opened
    evicted first. Safe across processes:

      <digest>-<name>       a complete entry; its mtime is when it was last opened
      .<digest>.<id>.tmp    a download under way, created at full size (so it counts) and held
                            with an exclusive flock by its downloader; one nobody holds is left
                            over from a crash, and removed
      .lock                 flocked while space is made and a download is reserved

    A reader holds a shared flock on the entry it reads until it closes it; eviction removes
    only entries it can flock exclusively at that moment.
    """

    def __init__(self, directory, limit: int):
        self.directory, self.limit = Path(directory), limit
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"{CACHE_DIR_ENV}={directory}: cannot create the cache directory "
                             f"({error.strerror})") from None

    def entry(self, location: str, file_stat: Stat) -> Path:
        digest = hashlib.sha256(f"{location}\n{file_stat.size}\n{file_stat.version}".encode()).hexdigest()
        return self.directory / f"{digest[:32]}-{url_name(location)}"

    def open(self, location: str, file_stat: Stat):
        """The cached copy, opened and pinned (a shared flock until closed), downloaded first if
        need be; None when it cannot fit (bigger than the limit, or the rest is being read)."""
        path = self.entry(location, file_stat)
        cached = self._open_pinned(path)
        if cached is not None:
            return cached
        download = self._reserve(path, file_stat.size)
        if download is None:
            return None
        tmp, f = download
        try:
            with f:
                source = RemoteFile(location, file_stat.size)
                while chunk := source.read(MAX_READ):
                    f.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # the download's exclusive lock is gone with its file: pin the entry (None in the rare
        # case that another process evicted it in between; the caller then streams)
        return self._open_pinned(path)

    def _open_pinned(self, path: Path):
        """The entry opened with a shared flock, or None if it is not there (or was just
        evicted: a file can be removed between our open and our lock)."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return None
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            f.close()
            return None
        os.utime(path)  # the eviction order: least recently opened first
        return f

    def _reserve(self, path: Path, size: int):
        """(temporary path, its file opened for writing and locked), with room made for `size`
        bytes; None when no room can be made."""
        if size > self.limit:
            return None
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if not self._make_room(size):
                return None
            tmp = self.directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
            f = open(tmp, "w+b")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.truncate(size)  # counts at its full size while it downloads
            return tmp, f

    def _make_room(self, size: int) -> bool:
        """Evict unpinned entries, least recently opened first, until `size` more bytes fit."""
        files = [p for p in self.directory.iterdir() if p.name != ".lock"]
        for stale in [p for p in files if p.name.endswith(".tmp") and self._try_remove(p)]:
            files.remove(stale)
        sizes = {p: p.stat().st_size for p in files}
        total = sum(sizes.values())
        entries = sorted((p for p in files if not p.name.endswith(".tmp")), key=lambda p: p.stat().st_mtime_ns)
        for entry in entries:
            if total + size <= self.limit:
                break
            if self._try_remove(entry):
                total -= sizes[entry]
        return total + size <= self.limit

    @staticmethod
    def _try_remove(path: Path) -> bool:
        """Remove a file nobody holds a lock on; False when someone does (or it is gone)."""
        try:
            with open(path, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                return True
        except (BlockingIOError, FileNotFoundError):
            return False
