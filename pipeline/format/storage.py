"""Where shards live: a local path, or (later) a URL. Every read of a shard or manifest opens it here.

    location (str or Path) ──join──▶ the location of a file inside a dataset
                            ──open_binary──▶ a seekable binary file
"""

import os
from pathlib import Path


def join(directory, name: str) -> str:
    """The location of `name` inside the dataset at `directory`."""
    return os.path.join(os.fspath(directory), name)


def open_binary(location):
    """A seekable binary file, open for reading; OSError when it cannot be opened."""
    return open(Path(location), "rb")
