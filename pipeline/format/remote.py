"""Files at a URL (s3://, gs://, http(s)://), read through fsspec with retries.

    remote_call(location, action, call)   call(fs, path), tried RETRIES times with backoff while
          │                               its error may pass (a refused or cut connection, a
          │                               timeout, 5xx, 408, 429); a missing file, denied access
          │                               or another 4xx at once; past RETRIES, one StorageError
          ├──▶ remote_stat                size and version (ETag or modification time)
          └──▶ RemoteFile                 seekable ranged reads: a seek costs nothing, sequential
                                          reads grow to MAX_READ bytes a request, a failed
                                          request goes on at the byte reached

Credentials and endpoints are the backends' own: for S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL (any S3-compatible server), AWS_PROFILE, ~/.aws; for GCS, Application Default
Credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud's login). An HTTP server must answer Range
requests. Callers go through pipeline.format.storage, which serves local paths and URLs alike.
"""

import io
import time
from dataclasses import dataclass

from pipeline.format.errors import DataError

RETRIES = 5  # tries of one remote request before giving up
BACKOFF = 0.1  # seconds before the second try; doubled before each further one
MIN_READ = 64 << 10  # bytes of the first request after opening or seeking
MAX_READ = 8 << 20  # sequential reads double their request size up to this
# botocore retries a refused connection 5 times with its own backoff, under ours: once is enough
BACKEND_OPTIONS = {"s3": {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 10,
                                            "read_timeout": 60}}}


class StorageError(DataError):
    """A remote file could not be read or written: after retries, or at once when access is
    denied. The message names the location and the cause."""


@dataclass(frozen=True)
class Stat:
    size: int  # bytes
    version: str  # changes when the file is replaced: mtime (local), ETag or modification time


def url_name(url: str) -> str:
    """The file name at the end of a URL."""
    return url.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# requests, with retries


def _filesystem(location: str):
    """(fsspec filesystem, its path) of a URL. fsspec keeps one instance per process and options.
    The backends' own retries are turned off where they can be: remote_call retries, and knows
    where a read got to."""
    import fsspec  # imported here: local datasets never need it

    options = BACKEND_OPTIONS.get(location.partition("://")[0], {})
    fs, path = fsspec.core.url_to_fs(location, **options)
    if hasattr(fs, "retries"):  # s3fs: a class attribute, read at each request
        fs.retries = 1
    return fs, path


def error_line(error: BaseException) -> str:
    """An error as "Type: first line of its message", for messages naming the cause."""
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
        return FileNotFoundError(error_line(error))
    if status in (401, 403):
        return StorageError(f"{location}: cannot {action}: access denied ({error_line(error)}); check "
                            "the credentials")
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return StorageError(f"{location}: cannot {action} ({error_line(error)})")
    return None


def remote_call(location: str, action: str, call):
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
    raise StorageError(f"{location}: cannot {action} after {RETRIES} tries ({error_line(last)})")


# ---------------------------------------------------------------------------------------------
# reading


def remote_stat(location: str) -> Stat:
    """Size and version of a remote file; FileNotFoundError or StorageError."""
    info = remote_call(location, "read the file's size", lambda fs, path: fs.info(path))
    if info.get("type", "file") != "file" or info.get("size") is None:
        raise StorageError(f"{location}: not a file, or the server does not tell its size")
    version = next((str(info[k]) for k in ("ETag", "etag", "LastModified", "Last-Modified",
                                           "mtime", "updated") if info.get(k)), "")
    return Stat(int(info["size"]), version)


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
        data = remote_call(self.location, f"read bytes {start}-{stop - 1}",
                       lambda fs, path: fs.cat_file(path, start=start, end=stop))
        if not data or len(data) > stop - start:
            raise StorageError(f"{self.location}: asked for bytes {start}-{stop - 1}, got "
                               f"{len(data)} bytes (the file changed, or the server ignores Range "
                               "requests)")
        self._buffer, self._buffer_start = data, start  # fewer bytes than asked: the rest next time
