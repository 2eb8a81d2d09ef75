"""Objects in a bucket: conditional writes, verified uploads, a lease for writers that must take turns.

Object stores have no rename, no append and no `flock`. What they do have, and what every writer
here relies on, is the conditional write: GCS's `ifGenerationMatch` and S3's `If-None-Match: *` /
`If-Match`. A write names the object's state it read (`token`: GCS generation, S3 ETag), or asks
that the object not exist yet, and the store refuses it (HTTP 412) if another writer got there
first: `PreconditionFailed`.

- `write(uri, data, if_token=...)` / `write(uri, data, if_absent=True)`: compare-and-swap.
- `upload_file`: puts a local file, then reads back what the store holds and checks its size and
  checksum (GCS md5Hash, S3 ETag) against the local bytes.
- `upload_tree(..., last=...)`: every file of a dir, the `last` ones after all others were
  verified (a SavedModel's `saved_model.pb`: TF Serving loads a numeric prefix only once it sees it).
- `Lease`: a lock object created with `if_absent`, renewed with `if_token`, taken over only once
  its holder let it expire; what `flock` is on a local disk.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from include.errors import StorageError
from include.storage.connections import filesystem
from include.storage.location import BucketURI

log = logging.getLogger(__name__)

#: Parts of an S3 upload larger than this are sent as a multipart upload of parts this size.
S3_PART = 50 * 2**20


class PreconditionFailed(StorageError):
    """A conditional write found the object changed (or present) since it was read: re-read, retry."""


@dataclass(frozen=True)
class ObjectStat:
    """What the store says about one object: its key, size, version token and checksum."""

    uri: BucketURI
    size: int
    token: str  # GCS generation, S3 ETag: what a conditional write names
    md5: str | None  # hex digest of the content where the store gives one (GCS md5Hash, S3 single-part ETag)


def _fs_path(uri: BucketURI) -> str:
    return f"{uri.bucket}/{uri.key}" if uri.key else uri.bucket


def _stat_of(uri: BucketURI, info: dict) -> ObjectStat:
    if uri.scheme == "gs":
        md5 = info.get("md5Hash")
        return ObjectStat(
            uri, int(info["size"]), str(info["generation"]), base64.b64decode(md5).hex() if md5 else None
        )
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    return ObjectStat(uri, int(info["size"]), etag, None if "-" in etag else etag)


def _storage_error(uri: BucketURI, what: str, err: BaseException) -> StorageError:
    return StorageError(f"cannot {what} {uri}: {type(err).__name__}: {err}")


def stat(uri: BucketURI) -> ObjectStat | None:
    """Returns what the store says about the object at `uri`; None if there is none."""
    fs = filesystem(uri)
    try:
        info = fs.info(_fs_path(uri), refresh=True) if uri.scheme == "s3" else fs.info(_fs_path(uri))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _storage_error(uri, "read the metadata of", err) from None
    if info.get("type") != "file":
        return None
    return _stat_of(uri, info)


def read(uri: BucketURI) -> tuple[bytes, str] | None:
    """Returns an object's bytes and the token they had (for a later conditional write); None if absent."""
    for _ in range(5):  # a write between the stat and the read: read both again
        found = stat(uri)
        if found is None:
            return None
        try:
            data = filesystem(uri).cat_file(_fs_path(uri))
        except FileNotFoundError:
            continue
        except OSError as err:
            raise _storage_error(uri, "read", err) from None
        after = stat(uri)
        if after is not None and after.token == found.token:
            return data, found.token
    raise StorageError(f"cannot read {uri}: it changed under every one of 5 reads")


def read_bytes(uri: BucketURI) -> bytes | None:
    """Returns an object's bytes; None if there is none."""
    try:
        return filesystem(uri).cat_file(_fs_path(uri))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _storage_error(uri, "read", err) from None


def write(uri: BucketURI, data: bytes, *, if_token: str | None = None, if_absent: bool = False) -> str:
    """Writes an object whole; returns its new token. PreconditionFailed if the condition does not hold.

    `if_absent`: only if no object is there; `if_token`: only if the object still has that token.
    """
    fs = filesystem(uri)
    try:
        if uri.scheme == "gs":
            generation = "0" if if_absent else if_token
            return _gcs_upload(fs, uri, data, generation)
        extra = {"IfNoneMatch": "*"} if if_absent else ({"IfMatch": f'"{if_token}"'} if if_token else {})
        out = fs.call_s3("put_object", Bucket=uri.bucket, Key=uri.key, Body=data, **extra)
        fs.invalidate_cache(_fs_path(uri))
        return str(out["ETag"]).strip('"')
    except (FileExistsError, OSError) as err:
        if _is_precondition(err):
            raise PreconditionFailed(
                f"{uri} changed since it was read (another writer committed first)"
            ) from None
        raise _storage_error(uri, "write", err) from None


def _is_precondition(err: BaseException) -> bool:
    text = str(err)
    return (
        isinstance(err, FileExistsError)
        or "PreconditionFailed" in text
        or "pre-conditions" in text
        or "412" in text
        or "ConditionalRequestConflict" in text
    )


def _gcs_upload(fs, uri: BucketURI, data: bytes, generation: str | None) -> str:
    """One multipart upload (the kind GCS checks `ifGenerationMatch` on); returns the new generation."""
    from fsspec.asyn import sync

    metadata = json.dumps({"name": uri.key})
    body = (
        b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
        + metadata.encode()
        + b"\n--==0==\nContent-Type: application/octet-stream\n\n"
        + data
        + b"\n--==0==--"
    )
    conditions = {"ifGenerationMatch": generation} if generation is not None else {}
    out = sync(
        fs.loop,
        fs._call,
        "POST",
        f"{fs._location}/upload/storage/v1/b/{quote(uri.bucket)}/o",
        uploadType="multipart",
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=body,
        json_out=True,
        **conditions,
    )
    fs.invalidate_cache(_fs_path(uri))
    return str(out["generation"])


def delete(uri: BucketURI) -> None:
    """Deletes one object (no error if it is gone)."""
    fs = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        try:
            fs.rm_file(_fs_path(uri))
        except FileNotFoundError:
            raise
        except OSError as err:
            raise _storage_error(uri, "delete", err) from None
    fs.invalidate_cache(_fs_path(uri))


def listing(prefix: BucketURI) -> list[ObjectStat]:
    """Returns every object below `prefix/` (recursively), sorted by key."""
    fs = filesystem(prefix)
    fs.invalidate_cache(_fs_path(prefix))
    try:
        found = fs.find(_fs_path(prefix), detail=True, withdirs=False)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise _storage_error(prefix, "list", err) from None
    base = f"{prefix.scheme}://"
    return [
        _stat_of(BucketURI(base + name), info)
        for name, info in sorted(found.items())
        if info.get("type") == "file" and name.rstrip("/") != _fs_path(prefix)
    ]


def children(prefix: BucketURI) -> list[str]:
    """Returns the names one level below `prefix/` (objects and common prefixes alike), sorted."""
    fs = filesystem(prefix)
    fs.invalidate_cache(_fs_path(prefix))
    try:
        found = fs.ls(_fs_path(prefix), detail=False)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise _storage_error(prefix, "list", err) from None
    own = _fs_path(prefix).rstrip("/")
    return sorted({name.rstrip("/").rsplit("/", 1)[-1] for name in found if name.rstrip("/") != own})


def open_read(uri: BucketURI, block_size: int = 2**20):
    """Returns a file object that streams the object (reads `block_size` bytes a request)."""
    try:
        return filesystem(uri).open(_fs_path(uri), "rb", block_size=block_size, cache_type="readahead")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _storage_error(uri, "open", err) from None


def _md5(data: bytes = b""):
    return hashlib.md5(data, usedforsecurity=False)  # the stores' checksum, not a security check


def _file_md5(path: Path, part: int | None = None) -> tuple[str, list[bytes]]:
    whole, parts, current, filled = _md5(), [], _md5(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(2**20):
            whole.update(chunk)
            if part:
                view = memoryview(chunk)
                while view:
                    take = min(len(view), part - filled)
                    current.update(view[:take])
                    filled, view = filled + take, view[take:]
                    if filled == part:
                        parts.append(current.digest())
                        current, filled = _md5(), 0
    if part and filled:
        parts.append(current.digest())
    return whole.hexdigest(), parts


def upload_file(local: str | os.PathLike[str], uri: BucketURI) -> ObjectStat:
    """Uploads one file and checks what the store then holds (size, checksum); returns its stat.

    A mismatch raises StorageError (the object is left for the retry to overwrite).
    """
    local = Path(local)
    size = local.stat().st_size
    fs = filesystem(uri)
    try:
        if uri.scheme == "s3" and size <= S3_PART:
            fs.call_s3("put_object", Bucket=uri.bucket, Key=uri.key, Body=local.read_bytes())
        else:
            fs.put_file(str(local), _fs_path(uri), **({"chunksize": S3_PART} if uri.scheme == "s3" else {}))
        fs.invalidate_cache(_fs_path(uri))
    except OSError as err:
        raise _storage_error(uri, f"upload {local} to", err) from None
    found = stat(uri)
    md5, parts = _file_md5(local, S3_PART if uri.scheme == "s3" and size > S3_PART else None)
    problem = None
    if found is None:
        problem = "the object is not there after the upload"
    elif found.size != size:
        problem = f"{found.size} bytes stored, {size} sent"
    elif found.md5 is not None and found.md5 != md5:
        problem = f"md5 {found.md5} stored, {md5} sent"
    elif found.md5 is None and uri.scheme == "s3" and parts:
        expected = f"{_md5(b''.join(parts)).hexdigest()}-{len(parts)}"
        if found.token != expected:
            problem = f"multipart ETag {found.token} stored, {expected} expected"
    if problem:
        raise StorageError(f"upload of {local} to {uri} did not verify: {problem}")
    return found


def upload_tree(
    local_dir: str | os.PathLike[str], prefix: BucketURI, *, last: Iterable[str] = ()
) -> list[ObjectStat]:
    """Uploads every file below `local_dir` to `prefix/<relative path>`, verified; `last` ones after all.

    `last` holds relative paths (e.g. `saved_model.pb`) uploaded only once every other file is
    in place and verified, in the order given.
    """
    local_dir = Path(local_dir)
    late = list(last)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    names = [p.relative_to(local_dir).as_posix() for p in files]
    stats = [upload_file(local_dir / name, prefix / name) for name in names if name not in late]
    stats += [upload_file(local_dir / name, prefix / name) for name in late if name in names]
    return stats


def download_tree(prefix: BucketURI, local_dir: str | os.PathLike[str]) -> list[Path]:
    """Downloads every object below `prefix/` into `local_dir`, keeping relative paths; returns them."""
    local_dir = Path(local_dir)
    fs = filesystem(prefix)
    written = []
    for found in listing(prefix):
        target = local_dir / found.uri.relative_to(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(_fs_path(found.uri), str(target))
        except OSError as err:
            raise _storage_error(found.uri, "download", err) from None
        written.append(target)
    return written


def delete_tree(prefix: BucketURI, *, first: Iterable[str] = ()) -> int:
    """Deletes every object below `prefix/`, the `first` relative paths before the rest; returns how many."""
    found = listing(prefix)
    early = [prefix / name for name in first]
    for uri in early:
        delete(uri)
    rest = [s.uri for s in found if s.uri not in early]
    for uri in rest:
        delete(uri)
    return len(rest) + sum(1 for s in found if s.uri in early)


#: Seconds a lease lives without a renewal (its holder renews every third of it); a crashed
#: holder's lease blocks the model dir's writers this long. `SAVEDMODEL_LEASE_TTL` overrides it.
LEASE_TTL = 60.0


def lease_ttl() -> float:
    """Returns the lease TTL: SAVEDMODEL_LEASE_TTL seconds if set (> 0), else LEASE_TTL."""
    value = os.environ.get("SAVEDMODEL_LEASE_TTL")
    try:
        ttl = float(value) if value else LEASE_TTL
    except ValueError:
        raise StorageError(f"SAVEDMODEL_LEASE_TTL: expected seconds (a number > 0), got {value!r}") from None
    if not ttl > 0:
        raise StorageError(f"SAVEDMODEL_LEASE_TTL: expected seconds (a number > 0), got {value!r}")
    return ttl


class Lease:
    """An exclusive, expiring lock held as an object: `<prefix>/.lock`, written conditionally.

    Taken by creating the object (`if_absent`); renewed by a background thread every `ttl / 3`
    with `if_token`; taken over by another writer only after `ttl` seconds without a renewal (its
    holder crashed or was cut off). A holder whose renewal fails has lost the lease: `check()`
    raises before it commits anything. Clocks of writers may differ by much less than `ttl`.
    """

    def __init__(self, lock: BucketURI, *, ttl: float | None = None, wait: float = 600.0) -> None:
        self.lock = lock
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.wait = wait
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._token: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl}).encode()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = 0.05
        while True:
            try:
                self._token = write(self.lock, self._body(), if_absent=True)
                break
            except PreconditionFailed:
                pass
            held = read(self.lock)
            if held is not None:
                holder = _holder(held[0])
                if holder["expires"] < time.time():
                    log.warning("taking over %s: its holder %s let it expire", self.lock, holder["owner"])
                    try:
                        self._token = write(self.lock, self._body(), if_token=held[1])
                        break
                    except PreconditionFailed:
                        pass
                elif time.monotonic() > deadline:
                    raise StorageError(
                        f"{self.lock} is held by {holder['owner']} for "
                        f"{holder['expires'] - time.time():.0f}s more; waited {self.wait:.0f}s"
                    )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.lock}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._token = write(self.lock, self._body(), if_token=self._token)
            except PreconditionFailed:
                self._lost = f"{self.lock} was taken over by another writer"
                return
            except StorageError as err:  # cut off: keep trying until the lease would have expired
                log.warning("cannot renew %s: %s", self.lock, err)

    def check(self) -> None:
        """Raises StorageError if this holder lost the lease (it must not commit)."""
        if self._lost:
            raise StorageError(f"lost the lease: {self._lost}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = read(self.lock)
        if held is not None and held[1] == self._token:
            delete(self.lock)


def _holder(data: bytes) -> dict:
    try:
        holder = json.loads(data)
        return {"owner": str(holder["owner"]), "expires": float(holder["expires"])}
    except (ValueError, KeyError, TypeError):
        return {"owner": "unreadable lock", "expires": 0.0}  # damaged: treat as expired


@contextlib.contextmanager
def leased(lock: BucketURI, *, ttl: float | None = None, wait: float = 600.0) -> Iterator[Lease]:
    """Holds the lease `lock` for the block; yields it (call `check()` before committing)."""
    lease = Lease(lock, ttl=ttl, wait=wait)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


def entries(prefix: BucketURI) -> dict[str, bool]:
    """Returns the names one level below `prefix/`, sorted, each with whether it is a prefix ("directory").

    A name that is both an object and a prefix (`a` and `a/b`) counts as a prefix.
    """
    fs = filesystem(prefix)
    fs.invalidate_cache(_fs_path(prefix))
    try:
        found = fs.ls(_fs_path(prefix), detail=True)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise _storage_error(prefix, "list", err) from None
    own = _fs_path(prefix).rstrip("/")
    kinds: dict[str, bool] = {}
    for info in found:
        name = info["name"].rstrip("/")
        if name != own:
            key = name.rsplit("/", 1)[-1]
            kinds[key] = kinds.get(key, False) or info.get("type") == "directory"
    return dict(sorted(kinds.items()))


def read_range(uri: BucketURI, start: int, end: int) -> bytes:
    """Returns the bytes `start`..`end` (exclusive) of an object, one ranged read (fewer at its end)."""
    if end <= start:
        return b""
    try:
        return filesystem(uri).cat_file(_fs_path(uri), start=start, end=end)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _storage_error(uri, "read", err) from None


def opened_stat(uri: BucketURI, handle) -> ObjectStat:
    """Returns what the store said about an object `open_read` opened (the version it reads)."""
    return _stat_of(uri, handle.details)
