"""Where a conversion writes: a local directory, or a URL (s3://, gs://, …) through a staging one.

    local directory   files are written in place (temporary name, fsync, rename)
    URL               files are written the same way in a local staging directory; `publish`
                      uploads each complete shard with every file written for it (the .tar last,
                      after sidecars such as NAME-000000.tar.idx) and removes the local copies;
                      the journal is uploaded after each shard, the manifest last

Object stores show an upload only once it is complete, so a reader of the URL never sees a part
of a shard, and never a manifest naming a shard that is not there yet. An interrupted conversion
resumes from the journal at the URL, as from a local one.
"""

import os
import shutil
import tempfile
from pathlib import Path

from pipeline.format import storage
from pipeline.format.errors import UsageError
from pipeline.format.files import write_json_atomically


class Output:
    """The output directory of one conversion; `local` is where its files are written."""

    def __init__(self, location):
        self.location = location
        self.remote = storage.is_url(location)
        self.local = Path(tempfile.mkdtemp(prefix="megabyte-convert-")) if self.remote else Path(location)

    def prepare(self) -> None:
        """A local directory is created and must be writable; a URL is checked on first use."""
        if self.remote:
            return
        try:
            self.local.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"{self.local}: cannot create the output directory ({error.strerror})") from None
        if not os.access(self.local, os.W_OK):
            raise UsageError(f"{self.local}: the output directory is not writable")

    def where(self, name: str):
        """The location of `name` in the output: a Path (local) or a URL."""
        return storage.join(self.location, name) if self.remote else self.local / name

    def exists(self, name: str) -> bool:
        return self._reached(storage.exists, self.where(name))

    def read_text(self, name: str) -> str:
        return self._reached(storage.read_bytes, self.where(name)).decode("utf-8")

    def names(self) -> list[str]:
        """The files in the output directory (for a URL, under its prefix)."""
        if self.remote:
            return self._reached(storage.listdir, self.location)
        return sorted(path.name for path in self.local.iterdir())

    def save_json(self, name: str, obj) -> None:
        """Write a JSON file atomically, and upload it (replacing the one there) for a URL."""
        write_json_atomically(self.local / name, obj)
        self._upload([name])

    def publish(self, shard: str) -> None:
        """A shard just closed: for a URL, upload every file written for it (NAME-000000.tar and
        any sidecar NAME-000000.tar.*), the .tar last, then remove the local copies."""
        if self.remote:
            sidecars = sorted(p.name for p in self.local.glob(f"{shard}.*") if not p.name.endswith(".tmp"))
            self._upload([*sidecars, shard])

    def remove(self, name: str) -> None:
        if self.remote:
            self._reached(storage.remove, self.where(name))
        else:
            (self.local / name).unlink(missing_ok=True)

    def close(self) -> None:
        """Drop the staging directory of a URL (what it held is uploaded, or was unfinished)."""
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

    def _upload(self, names: list[str]) -> None:
        if not self.remote:
            return
        for name in names:
            self._reached(storage.upload, self.local / name, self.where(name))
            (self.local / name).unlink()

    @staticmethod
    def _reached(action, *args):
        """A remote action whose failure (unreachable, access denied, no such bucket) stops the
        conversion with its one line; what was uploaded before stays, and a rerun goes on."""
        try:
            return action(*args)
        except storage.StorageError as error:
            raise UsageError(str(error)) from None
