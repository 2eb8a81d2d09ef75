"""One path API over local dirs and buckets: `as_path` gives a pathlib.Path or a UPath.

universal_pathlib's UPath (which Airflow's ObjectStoragePath is built on) gives a bucket prefix
the pathlib API (`/`, `read_bytes`, `exists`, `is_dir`, `iterdir`, `stat`), so code that reads the
registry or a run record reads a bucket the same way. What pathlib cannot say for a bucket
(atomic replacement, append, a lock, a version dir's removal) goes through include/durable.py and
include/storage/objects.py, which branch on `is_remote`.
"""

from __future__ import annotations

import os
from pathlib import Path

from upath import UPath

from include.storage.connections import storage_options
from include.storage.location import SCHEMES, BucketURI, is_bucket


def as_path(where: str | os.PathLike[str]) -> Path | UPath:
    """Returns a local path as a Path and a `gs://`/`s3://` location as a UPath opened with its connection."""
    if isinstance(where, UPath):
        return where
    if is_bucket(where):
        uri = BucketURI(str(where))
        return UPath(str(uri), use_listings_cache=False, **storage_options(uri))
    return Path(where)


def is_remote(path: object) -> bool:
    """Returns whether `path` lies in a bucket (a UPath of gs:// or s3://, or such a URI string)."""
    if isinstance(path, UPath):
        return path.protocol in SCHEMES
    return is_bucket(path)


def uri_of(path: str | os.PathLike[str]) -> BucketURI:
    """Returns the BucketURI of a remote path."""
    return BucketURI(str(path))


def lexists(path: Path | UPath) -> bool:
    """Returns whether anything is at `path` (a broken symlink counts, locally)."""
    return path.exists() if is_remote(path) else os.path.lexists(path)
