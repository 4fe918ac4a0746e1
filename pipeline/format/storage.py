"""Where datasets live: a local path, or a URL (s3://, gs://, http(s)://) read through fsspec.
Every read of a shard or a manifest, and every upload of a converted dataset, goes through here.

    location (str or Path) ──join──▶ the location of a file inside a dataset
      ──stat──▶ size and version (local: mtime; remote: ETag or modification time)
      ──open_binary──▶ a seekable binary file:
      │   local path   the file itself
      │   URL          RemoteFile: ranged reads (a seek costs nothing, sequential reads grow to
      │                MAX_READ bytes a request); a failed request is retried with backoff and
      │                goes on at the byte reached; past RETRIES tries, one StorageError
      │   URL + cache  the whole file copied to the local cache on first open, then read there
      ──read_bytes──▶ a small file whole (manifests, journals)
      ──upload / remove / listdir──▶ what a converter writing to a URL needs

Credentials and endpoints are the backends' own: for S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL (any S3-compatible server), AWS_PROFILE, ~/.aws; for GCS, Application Default
Credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud's login). An HTTP server must answer Range
requests.

The cache (MEGABYTE_CACHE_DIR, MEGABYTE_CACHE_LIMIT in bytes) holds whole remote shards, least
recently opened evicted first to stay under the limit. It is shared by every process on the
machine (DataLoader workers, ranks): a file being read holds a shared flock on its cache entry,
and eviction skips entries it cannot lock exclusively, so no shard is evicted while being read.
"""

import fcntl
import hashlib
import io
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.format.errors import DataError, UsageError

SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")
RETRIES = 5  # tries of one remote request before giving up
BACKOFF = 0.1  # seconds before the second try; doubled before each further one
MIN_READ = 64 << 10  # bytes of the first request after opening or seeking
MAX_READ = 8 << 20  # sequential reads double their request size up to this
# botocore retries a refused connection 5 times with its own backoff, under ours: once is enough
BACKEND_OPTIONS = {"s3": {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 10,
                                            "read_timeout": 60}}}
CACHE_DIR_ENV, CACHE_LIMIT_ENV = "MEGABYTE_CACHE_DIR", "MEGABYTE_CACHE_LIMIT"


class StorageError(DataError):
    """A remote file could not be read or written: after retries, or at once when access is
    denied. The message names the location and the cause."""


# ---------------------------------------------------------------------------------------------
# locations


def is_url(location) -> bool:
    return isinstance(location, str) and location.startswith(SCHEMES)


def join(directory, name: str) -> str:
    """The location of `name` inside the dataset at `directory`."""
    if is_url(directory):
        return f"{directory.rstrip('/')}/{name}"
    return os.path.join(os.fspath(directory), name)


def basename(location) -> str:
    """The file name at the end of a location."""
    return location.rstrip("/").rsplit("/", 1)[-1] if is_url(location) else Path(location).name


def _filesystem(location: str):
    """(fsspec filesystem, its path) of a URL. fsspec keeps one instance per process and options.
    The backends' own retries are turned off where they can be: _remote retries, and knows where
    a read got to."""
    import fsspec  # imported here: local datasets never need it

    options = BACKEND_OPTIONS.get(location.partition("://")[0], {})
    fs, path = fsspec.core.url_to_fs(location, **options)
    if hasattr(fs, "retries"):  # s3fs: a class attribute, read at each request
        fs.retries = 1
    return fs, path


def _cause(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unreachable(error: FileNotFoundError) -> bool:
    """fsspec's HTTP backend says FileNotFoundError for a server it could not reach too, with the
    connection error as the cause; a real 404 has none, another FileNotFoundError, or an error
    with the status the server answered (s3fs: botocore's ClientError)."""
    cause = error.__cause__
    return cause is not None and not isinstance(cause, FileNotFoundError) and _http_status(cause) is None


def _http_status(error: Exception) -> int | None:
    """The HTTP status a backend's error carries, if any (botocore's ClientError, aiohttp's
    ClientResponseError, gcsfs's HttpError), for errors the backend did not translate itself."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    for name in ("status", "code"):
        if isinstance(getattr(error, name, None), int):
            return getattr(error, name)
    return None


def _final(location: str, action: str, error: Exception) -> Exception | None:
    """What to raise at once rather than try again: a missing file (FileNotFoundError), denied
    access, another request the server refused (4xx). None for what may pass: a refused or cut
    connection, a timeout, a server error (5xx), 408 or 429."""
    if isinstance(error, FileNotFoundError):
        return None if _unreachable(error) else error
    status = 403 if isinstance(error, PermissionError) else _http_status(error)
    if status == 404:
        return FileNotFoundError(_cause(error))
    if status in (401, 403):
        return StorageError(f"{location}: cannot {action}: access denied ({_cause(error)}); check "
                            "the credentials")
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return StorageError(f"{location}: cannot {action} ({_cause(error)})")
    return None


def _remote(location: str, action: str, call):
    """call(fs, path), tried RETRIES times with backoff while its errors may pass (see _final),
    then one StorageError naming the location and the last cause."""
    fs, path = _filesystem(location)
    for attempt in range(RETRIES):
        try:
            return call(fs, path)
        except Exception as error:  # noqa: BLE001 - backends raise many kinds for one dropped connection
            final = _final(location, action, error)
            if final is not None:
                raise final from None
            last = error.__cause__ if isinstance(error, FileNotFoundError) else error
        if attempt + 1 < RETRIES:
            time.sleep(BACKOFF * 2 ** attempt)
    raise StorageError(f"{location}: cannot {action} after {RETRIES} tries ({_cause(last)})")


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Stat:
    size: int  # bytes
    version: str  # changes when the file is replaced: mtime (local), ETag or modification time


def stat(location) -> Stat:
    """Size and version of a file; OSError (local) or FileNotFoundError / StorageError (URL)."""
    if not is_url(location):
        result = os.stat(location)
        return Stat(result.st_size, str(result.st_mtime_ns))
    info = _remote(location, "read the file's size", lambda fs, path: fs.info(path))
    if info.get("type", "file") != "file" or info.get("size") is None:
        raise StorageError(f"{location}: not a file, or the server does not tell its size")
    version = next((str(info[k]) for k in ("ETag", "etag", "LastModified", "Last-Modified",
                                           "mtime", "updated") if info.get(k)), "")
    return Stat(int(info["size"]), version)


def exists(location) -> bool:
    """Whether a file is there. For a URL, a server that cannot be reached is a StorageError
    (not False), so that a typo in the endpoint is not reported as a missing dataset."""
    if not is_url(location):
        return Path(location).is_file()
    try:
        return stat(location) is not None
    except FileNotFoundError:
        return False


def read_bytes(location) -> bytes:
    """A small file, whole. FileNotFoundError when it is not there."""
    if not is_url(location):
        return Path(location).read_bytes()
    return _remote(location, "read", lambda fs, path: fs.cat_file(path))


def open_binary(location):
    """A seekable binary file, open for reading: seek + read give any byte range, and reads of a
    URL survive dropped connections (RemoteFile). A missing file is FileNotFoundError (an
    OSError); a URL that cannot be reached, a StorageError."""
    if not is_url(location):
        return open(Path(location), "rb")
    file_stat = stat(location)
    cache = cache_from_env()
    cached = cache.open(location, file_stat) if cache is not None else None
    return cached if cached is not None else RemoteFile(location, file_stat.size)


class RemoteFile(io.RawIOBase):
    """A remote file, read-only and seekable, through ranged reads of at most MAX_READ bytes.

    A request that fails is retried (with backoff) from the byte the file has reached, so a
    dropped connection or a restarted server loses and repeats nothing; RETRIES failures in a
    row are one StorageError naming the location, the offset and the cause.
    """

    def __init__(self, location: str, size: int):
        self.location, self.size = location, size
        self.position = 0
        self._buffer, self._buffer_start = b"", 0
        self._request = MIN_READ  # bytes of the next request: doubles while reads are sequential

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self.location}: seek to a negative position {base + offset}")
        self.position = base + offset
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        pieces = []
        while self.position < end:
            offset = self.position - self._buffer_start
            if not 0 <= offset < len(self._buffer):
                self._fill(end)
                offset = 0
            piece = self._buffer[offset: offset + end - self.position]
            pieces.append(piece)
            self.position += len(piece)
        return b"".join(pieces)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _fill(self, wanted_end: int) -> None:
        """Fetch from the current position: at least up to wanted_end, more while reading on."""
        sequential = self.position == self._buffer_start + len(self._buffer)
        self._request = min(MAX_READ, self._request * 2) if sequential else MIN_READ
        stop = min(self.size, max(wanted_end, self.position + self._request))
        start = self.position
        data = _remote(self.location, f"read bytes {start}-{stop - 1}",
                       lambda fs, path: fs.cat_file(path, start=start, end=stop))
        if not data or len(data) > stop - start:
            raise StorageError(f"{self.location}: asked for bytes {start}-{stop - 1}, got "
                               f"{len(data)} bytes (the file changed, or the server ignores Range "
                               "requests)")
        self._buffer, self._buffer_start = data, start  # fewer bytes than asked: the rest next time


# ---------------------------------------------------------------------------------------------
# the local cache of remote shards


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
        return self.directory / f"{digest[:32]}-{basename(location)}"

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


# ---------------------------------------------------------------------------------------------
# writing (converters with a URL for --out)


def upload(local_path, location: str) -> None:
    """Put a local file at a URL, whole: object stores show it only once complete."""
    try:
        _remote(location, "upload", lambda fs, path: fs.put_file(os.fspath(local_path), path))
    except FileNotFoundError as error:  # e.g. the bucket does not exist
        raise StorageError(f"{location}: cannot upload ({_cause(error)})") from None


def remove(location: str) -> None:
    """Remove a remote file; one that is not there is fine."""
    try:
        _remote(location, "remove", lambda fs, path: fs.rm_file(path))
    except FileNotFoundError:
        pass


def listdir(location: str) -> list[str]:
    """The names of the files under a URL 'directory' (a prefix); [] when there are none."""
    try:
        found = _remote(location, "list", lambda fs, path: fs.ls(path, detail=False, refresh=True))
    except FileNotFoundError:
        return []
    return sorted(basename(name) for name in found)
