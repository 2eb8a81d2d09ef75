"""Publish: promote an exported SavedModel into the serving tree atomically and record it.

Steps, all under the model dir's lock: verify the export, copy it into a non-numeric staging
dir on the serving filesystem, flush and re-verify it, then `rename` it to the numeric version
name. TensorFlow Serving ignores non-numeric names, so it never sees a half-written version.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from include.errors import IncompleteModelError, RunParamsError, VersionConflictError
from include.savedmodel_dir import content_digest, fsync_tree, missing_parts
from include.versions import model_dir, parse_version

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".publish.lock"
STAGING_PREFIX = ".staging-"
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class PublishResult:
    """What publish hands on: the version, where it is served from and what happened."""

    version: int
    path: str
    content_digest: str
    status: str  # "published", "unchanged" or "replaced"

    def to_dict(self) -> dict:
        """Returns the result as a plain dict."""
        return asdict(self)


@contextlib.contextmanager
def model_lock(model_path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on a model dir (shared by every publisher of the model)."""
    model_path.mkdir(parents=True, exist_ok=True)
    with open(model_path / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_version(
    export_path: str | os.PathLike[str],
    serving_root: str | os.PathLike[str],
    model_name: str,
    version: int,
    *,
    force: bool = False,
    force_reason: str | None = None,
    record: dict | None = None,
) -> PublishResult:
    """Returns the result of promoting `export_path` to `<serving_root>/<model>/<version>`.

    Identical content already published is a no-op success; different content raises
    VersionConflictError unless `force` (with a reason) asks to replace it.
    """
    version = parse_version(version)
    if force and not (force_reason or "").strip():
        raise RunParamsError("force_publish needs a non-empty force_reason")
    export_path = Path(export_path)
    problems = missing_parts(export_path)
    if problems:
        raise IncompleteModelError(str(export_path), problems)
    digest = content_digest(export_path)
    base = model_dir(serving_root, model_name)
    target = base / str(version)

    with model_lock(base):
        _remove_stale_staging(base)
        status = "published"
        if target.exists():
            existing = content_digest(target) if not missing_parts(target) else "incomplete"
            if existing == digest:
                log.info(
                    "version %s already holds this content (sha256 %s): nothing to do", target, digest[:12]
                )
                _record(base, version, digest, "unchanged", record, force_reason)
                return PublishResult(version, str(target), digest, "unchanged")
            if not force:
                raise VersionConflictError(str(target), existing, digest)
            status = "replaced"
        staging = base / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(export_path, staging)
            fsync_tree(staging)
            staged_problems = missing_parts(staging)
            if staged_problems:
                raise IncompleteModelError(str(staging), staged_problems)
            staged = content_digest(staging)
            if staged != digest:
                raise IncompleteModelError(
                    str(staging), [f"copy digest {staged[:12]} != source {digest[:12]}"]
                )
            if status == "replaced":
                _exchange(staging, target)  # staging now holds the old version
                log.warning("replaced version %s (force_publish: %s)", target, force_reason)
            else:
                os.rename(staging, target)
            _fsync_dir(base)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _record(base, version, digest, status, record, force_reason)
    log.info("published version %s of %s at %s (sha256 %s)", version, model_name, target, digest[:12])
    return PublishResult(version, str(target), digest, status)


def read_manifest(model_path: str | os.PathLike[str]) -> dict:
    """Returns the manifest of a model dir ({"model": ..., "versions": {...}}), empty if none."""
    path = Path(model_path) / MANIFEST_FILE
    if not path.is_file():
        return {"model": Path(model_path).name, "versions": {}}
    return json.loads(path.read_text())


def _record(
    base: Path, version: int, digest: str, status: str, record: dict | None, force_reason: str | None
) -> None:
    """Adds or refreshes one version's entry in the manifest (caller holds the lock)."""
    manifest = read_manifest(base)
    entries = manifest.setdefault("versions", {})
    previous = entries.get(str(version), {})
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry = {
        **previous,
        **(record or {}),
        "version": version,
        "content_digest": digest,
        "status": "published",
        "published_at": previous.get("published_at", now) if status == "unchanged" else now,
        "last_publish": status,
    }
    if force_reason:
        entry["force_reason"] = force_reason
    entries[str(version)] = entry
    manifest["versions"] = dict(sorted(entries.items(), key=lambda kv: int(kv[0])))
    write_json_atomic(base / MANIFEST_FILE, manifest)


def write_json_atomic(path: Path, data: dict) -> None:
    """Writes JSON to a temp file in the same dir, flushes it and `os.replace`s it into place."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _remove_stale_staging(base: Path) -> None:
    """Deletes staging dirs left by crashed publishers (under the lock no publisher is live)."""
    for stale in base.glob(f"{STAGING_PREFIX}*"):
        log.warning("removing stale staging dir %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _exchange(a: Path, b: Path) -> None:
    """Swaps two directories atomically (Linux renameat2 RENAME_EXCHANGE), else via a side name."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
    side = a.parent / f"{a.name}.old"
    os.rename(b, side)
    os.rename(a, b)
    os.rename(side, a)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
