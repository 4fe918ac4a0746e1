"""Where datasets live: a local path, or a URL (s3://, gs://, http(s)://). Every read of a shard
or a manifest, and every upload of a converted dataset, goes through here.

    location (str or Path) ──join──▶ the location of a file inside a dataset
      ──stat──▶ size and version (local: mtime; remote: ETag or modification time)
      ──open_binary──▶ a seekable binary file:
      │   local path   the file itself
      │   URL          pipeline.format.remote.RemoteFile: ranged reads, retried with backoff from
      │                the byte reached; past RETRIES tries, one StorageError
      │   URL + cache  the whole file copied to the local cache on first open, then read there
      │                (pipeline.format.cache: MEGABYTE_CACHE_DIR, MEGABYTE_CACHE_LIMIT)
      ──read_bytes──▶ a small file whole (manifests, journals)
      ──upload / remove / listdir──▶ what a converter writing to a URL needs

A missing file is FileNotFoundError (an OSError) whatever the location; a URL that cannot be
reached, or refuses access, is a StorageError naming it and the cause.
"""

import os
from pathlib import Path

from pipeline.format.cache import cache_from_env
from pipeline.format.remote import (RemoteFile, Stat, StorageError, error_line, remote_call, remote_stat,
                                    url_name)

SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")


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
    return url_name(location) if is_url(location) else Path(location).name


# ---------------------------------------------------------------------------------------------
# reading


def stat(location) -> Stat:
    """Size and version of a file; OSError (local) or FileNotFoundError / StorageError (URL)."""
    if is_url(location):
        return remote_stat(location)
    result = os.stat(location)
    return Stat(result.st_size, str(result.st_mtime_ns))


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
    return remote_call(location, "read", lambda fs, path: fs.cat_file(path))


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


# ---------------------------------------------------------------------------------------------
# writing (converters with a URL for --out)


def upload(local_path, location: str) -> None:
    """Put a local file at a URL, whole: object stores show it only once complete."""
    try:
        remote_call(location, "upload", lambda fs, path: fs.put_file(os.fspath(local_path), path))
    except FileNotFoundError as error:  # e.g. the bucket does not exist
        raise StorageError(f"{location}: cannot upload ({error_line(error)})") from None


def remove(location: str) -> None:
    """Remove a remote file; one that is not there is fine."""
    try:
        remote_call(location, "remove", lambda fs, path: fs.rm_file(path))
    except FileNotFoundError:
        pass


def listdir(location: str) -> list[str]:
    """The names of the files under a URL 'directory' (a prefix); [] when there are none."""
    try:
        found = remote_call(location, "list", lambda fs, path: fs.ls(path, detail=False, refresh=True))
    except FileNotFoundError:
        return []
    return sorted(basename(name) for name in found)
