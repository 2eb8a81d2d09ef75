"""A run whose work dir is in a bucket: the bucket is the run's home, each task works in a local copy.

When `storage.export_root` is `gs://...` or `s3://...`, a run's work dir is a BucketURI and its
tasks may run on hosts that share no disk. No task works in the bucket directly: it `pull`s what
it needs (run.json, config.yaml, earlier steps' files) into a local mirror dir, runs the same code
as a local run there, and `push`es what it made. For a local work dir the mirror is the work dir
itself and `pull`/`push` do nothing.

    <mirror root>/<scheme>/<bucket>/<key>/   a task's copy of <scheme>://<bucket>/<key>
    mirror root: $SAVEDMODEL_LOCAL_RUNS, else <tempdir>/savedmodel-runs

The commit rule of a push: a step's JSON (`train.json`, `validation.json`, `export.json`) is its
commit marker. `push` first deletes the marker from the bucket (a retry un-commits the earlier
attempt before overwriting its files), then uploads the step's files, each verified (size and
checksum), a SavedModel's `saved_model.pb` after every other file of its dir, and the marker
last. A task killed before or during its push leaves no marker over files it did not finish:
the next task reads "has no train.json" (RunRecordError) and the retry uploads everything again.
A tree pushed replaces what the bucket held under its prefix (stale objects of an earlier attempt
are deleted first, `saved_model.pb` first of all).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from include.errors import StorageError
from include.savedmodel.files import SAVED_MODEL_PB
from include.storage.location import BucketURI

log = logging.getLogger(__name__)

#: The variable that names where tasks keep their local copies of bucket work dirs.
MIRROR_ENV = "SAVEDMODEL_LOCAL_RUNS"
#: Uploaded after every other file of a tree, and deleted before any (TF Serving's and the sensor's cue).
LAST = (SAVED_MODEL_PB,)


class RunCopy(Protocol):
    """What pull and push need of a run (include/run/record.py's RunRecord has it; this module
    does not import that one, which imports this)."""

    @property
    def remote(self) -> BucketURI | None: ...

    @property
    def home(self) -> Path: ...

    local_dir: str | None


@dataclass(frozen=True)
class Transfer:
    """What one pull or push moved: objects, bytes and seconds (logged; the report's costs)."""

    direction: str  # "pulled" or "pushed"
    objects: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.direction} {self.objects} objects ({self.bytes:,} bytes) in {self.seconds:.2f}s"


def mirror_root() -> Path:
    """Returns the dir under which tasks keep their local copies of bucket work dirs."""
    configured = os.environ.get(MIRROR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "savedmodel-runs"


def mirror_dir(work_dir: BucketURI) -> Path:
    """Returns the local copy of a bucket work dir (not created)."""
    return mirror_root() / work_dir.scheme / work_dir.bucket / work_dir.key


def fresh_mirror(work_dir: BucketURI) -> Path:
    """Returns an empty local copy of `work_dir`: what an earlier task left on this host is removed."""
    local = mirror_dir(work_dir)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    return local


def discard(record: RunCopy | None) -> None:
    """Removes a task's local copy of a bucket work dir (no-op for local work dirs)."""
    if record is not None and record.remote is not None and record.local_dir:
        shutil.rmtree(record.local_dir, ignore_errors=True)


def pull(record: RunCopy, *names: str) -> Transfer | None:
    """Downloads `names` (relative to the work dir; a trailing `/` names a tree) into the task's copy.

    What the bucket lacks is skipped (the step that reads it says what is missing). A tree's local
    copy is replaced whole. None for a local work dir.
    """
    remote = record.remote
    if remote is None:
        return None
    from include.storage import objects

    started, count, size = time.monotonic(), 0, 0
    for name in names:
        target = record.home / name.rstrip("/")
        if name.endswith("/"):
            shutil.rmtree(target, ignore_errors=True)
            for path in objects.download_tree(remote / name, target):
                count, size = count + 1, size + path.stat().st_size
            continue
        data = objects.read_bytes(remote / name)
        if data is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        count, size = count + 1, size + len(data)
    done = Transfer("pulled", count, size, time.monotonic() - started)
    log.info("%s: %s from %s", ", ".join(names), done, remote)
    return done


def push(record: RunCopy, names: Iterable[str], *, marker: str) -> Transfer | None:
    """Uploads `names` (files, or trees ending in `/`) from the task's copy, then `marker` last.

    The marker (the step's JSON) is deleted from the bucket before anything else is written, so
    the bucket never holds a marker over files its step did not finish uploading. Every upload is
    verified (include/storage/objects.py `upload_file`). None for a local work dir.
    """
    remote = record.remote
    if remote is None:
        return None
    from include.storage import objects

    started, stats = time.monotonic(), []
    objects.delete(remote / marker)
    for name in names:
        source = record.home / name.rstrip("/")
        if name.endswith("/"):
            if not any(path.is_file() for path in source.rglob("*")):  # never a marker over nothing
                raise StorageError(f"cannot push {name} to {remote}: {source} holds no file")
            objects.delete_tree(remote / name, first=LAST)
            stats += objects.upload_tree(source, remote / name, last=LAST)
        else:
            stats.append(objects.upload_file(source, remote / name))
    stats.append(objects.upload_file(record.home / marker, remote / marker))
    done = Transfer("pushed", len(stats), sum(s.size for s in stats), time.monotonic() - started)
    log.info("%s then %s: %s to %s", ", ".join(names), marker, done, remote)
    return done
