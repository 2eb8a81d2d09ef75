"""A location is a local path or an object-store URI: `gs://bucket/prefix` or `s3://bucket/prefix`.

`BucketURI` is a `str` that joins like a path (`uri / "digits" / "1"`), so the code that builds
`<serving_root>/<model>/<version>` does not care which one it holds. `parse_location` is what the
config accepts; anything else with a `scheme://` is refused naming the schemes it knows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

#: The object stores a location may name (fsspec's gcsfs and s3fs serve them).
SCHEMES = ("gs", "s3")
_URI = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<rest>.*)$")
# GCS and S3 bucket names: lowercase letters, digits, dots, dashes (and `_` on GCS), 3-63 characters.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class BucketURI(str):
    """An object-store location, `scheme://bucket/key`, with path-like joins and parts."""

    def __new__(cls, value: str) -> BucketURI:
        scheme, bucket, key = _split(value)
        return super().__new__(cls, f"{scheme}://{bucket}/{key}".rstrip("/"))

    @property
    def scheme(self) -> str:
        return _split(self)[0]

    @property
    def bucket(self) -> str:
        return _split(self)[1]

    @property
    def key(self) -> str:
        """Returns the object key (no leading slash); '' for the bucket itself."""
        return _split(self)[2]

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name if self.key else self.bucket

    @property
    def parent(self) -> BucketURI:
        return BucketURI(f"{self.scheme}://{self.bucket}/{PurePosixPath(self.key).parent}".replace("/.", ""))

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.key).parts

    def __truediv__(self, other: object) -> BucketURI:
        part = str(other).strip("/")
        return BucketURI(f"{self}/{part}") if part else self

    def __repr__(self) -> str:
        return f"BucketURI({str(self)!r})"

    def relative_to(self, other: str) -> str:
        """Returns this URI's key below `other` (a prefix of it), ValueError if it is not below."""
        prefix = str(BucketURI(other)) + "/"
        if not str(self).startswith(prefix):
            raise ValueError(f"{self} is not below {other}")
        return str(self)[len(prefix) :]


def _split(value: str) -> tuple[str, str, str]:
    match = _URI.match(value)
    if match is None or match["scheme"].lower() not in SCHEMES:
        raise ValueError(f"expected gs://bucket/prefix or s3://bucket/prefix, got {value!r}")
    bucket, _, key = match["rest"].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{value!r}: {bucket!r} is not a bucket name (3-63 of a-z 0-9 . - _)")
    key = key.strip("/")
    if any(part in ("", ".", "..") for part in key.split("/")) and key:
        raise ValueError(f"{value!r}: the key has an empty, '.' or '..' part")
    return match["scheme"].lower(), bucket, key


def is_bucket(location: object) -> bool:
    """Returns whether `location` names an object store (a BucketURI or a `gs://`/`s3://` string)."""
    return isinstance(location, BucketURI) or (
        isinstance(location, str)
        and bool(_URI.match(location))
        and location.split("://")[0].lower() in SCHEMES
    )


def scheme_problem(value: str) -> str | None:
    """Returns why a `scheme://...` string is not a location this project reads; None for a plain path."""
    match = _URI.match(value)
    if match is None:
        return None
    if match["scheme"].lower() == "file":
        return f"expected a plain path instead of a file:// URI, got {value!r}"
    try:
        _split(value)
    except ValueError as err:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        if match["scheme"].lower() not in SCHEMES:
            return f"unknown storage scheme {match['scheme']}:// in {value!r}; known: {known} or a local path"
        return str(err)
    return None


def location(value: str | os.PathLike[str]) -> Path | BucketURI:
    """Returns `value` as a BucketURI when it names an object store, else as a Path."""
    if isinstance(value, BucketURI):
        return value
    if is_bucket(value):
        return BucketURI(str(value))
    return Path(value)


def join(base: str | os.PathLike[str], *parts: object) -> Path | BucketURI:
    """Returns `base / part / ...` for a local path or an object-store URI alike."""
    result = location(base)
    for part in parts:
        result = result / str(part)
    return result
