"""The real corpora of `megabyte compare`: pinned public archives → converted datasets."""
