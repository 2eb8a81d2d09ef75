"""Durable file writes: one lock per directory, atomic replacement, fsync of files and directories.

A file written here is either the old one or the new one, whole, even across a crash: the text
goes to a temp file in the same directory, is flushed, and `os.replace`s the target; then the
directory itself is flushed, so the rename survives too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".publish.lock"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on a directory (shared by every writer of it)."""
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
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    data = text.encode("utf-8") if isinstance(text, str) else text
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
    """Flushes every file and directory under `directory` to disk."""
    root = Path(directory)
    for path in sorted(root.rglob("*"), reverse=True):
        fsync_path(path)
    fsync_path(root)


def fsync_path(path: Path) -> None:
    """Flushes one file or directory (a directory's entries: renames in it survive a crash)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
