"""Durable file writes: one lock per directory, atomic replacement, fsync of files and directories.

A file written here is either the old one or the new one, whole, even across a crash: the text
goes to a temp file in the same directory, is flushed, and `os.replace`s the target; then the
directory itself is flushed, so the rename survives too.

In a bucket (a UPath of include/storage/paths.py) the same calls keep the same promises by the
store's means: one PUT replaces an object whole (readers see the old one or the new one), an
append rewrites the object (the caller holds the lock), the lock is a lease object written with
conditional writes (include/storage/objects.py), and there is nothing to flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from include.storage import objects
from include.storage.paths import is_remote, uri_of

LOCK_FILE = ".publish.lock"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on a directory (shared by every writer of it).

    In a bucket: the lease `<path>/.publish.lock` (include/storage/objects.py `Lease`).
    """
    if is_remote(path):
        with objects.leased(uri_of(path) / LOCK_FILE) as lease:
            yield
            lease.check()  # a holder that lost its lease must not report success
        return
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(
    path: Path, text: str | bytes, *, tmp_dir: Path | None = None, sync_dir: bool = True
) -> None:
    """Writes text (UTF-8) or bytes to a temp file, flushes it and `os.replace`s `path` with it.

    The temp file goes beside `path` unless `tmp_dir` (on the same file system) names where a
    crashed writer's leftovers are looked for. `sync_dir=False` leaves flushing the directory to
    the caller (one flush after many files).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    if is_remote(path):
        objects.write(uri_of(path), data)  # one PUT: the old object or the new one, whole
        return
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if sync_dir:
        fsync_path(path.parent)  # the rename itself survives a crash


def append_bytes(path: Path, data: bytes) -> int:
    """Appends `data` to a file (O_APPEND), flushes it and returns the file's new length in bytes.

    A crash can leave part of `data` at the end; the caller records the length it committed
    elsewhere and drops anything past it (see include/registry/store.py).
    """
    if is_remote(path):  # no append on object stores: rewrite it whole (the caller holds the lock)
        found = objects.read_bytes(uri_of(path)) or b""
        objects.write(uri_of(path), found + data)
        return len(found) + len(data)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        length = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if created:
        fsync_path(path.parent)
    return length


def write_json_atomic(path: Path, data: dict) -> None:
    """Writes `data` as indented JSON with sorted keys, atomically (values JSON lacks become str)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def fsync_tree(directory: str | os.PathLike[str]) -> None:
    """Flushes every file and directory under `directory` to disk (nothing to do in a bucket)."""
    if is_remote(directory):
        return
    root = Path(directory)
    for path in sorted(root.rglob("*"), reverse=True):
        fsync_path(path)
    fsync_path(root)


def fsync_path(path: Path) -> None:
    """Flushes one file or directory (a directory's entries: renames in it survive a crash)."""
    if is_remote(path):
        return
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
