"""Preflight: before a run trains for minutes, check that it could publish what it trains.

`preflight(config)` runs first in the train step (include/run/steps.py `train_run`). Each failure
is a PreflightError naming the path and why; it is permanent, so the task fails at once, without
retries. Checked:

- `storage.serving_root` and the run's dir under `storage.export_root` exist or can be created
  (the nearest existing ancestor is a directory), are directories, and are writable: not on a
  read-only file system, writable for this user, and a probe file is really created and removed
  (permission bits alone say nothing about root or about some mounts);
- the model dir, its `.staging/` and `.manifest/versions/` are on one file system (`st_dev`):
  publish renames a version from `.staging/` into the model dir, and the registry renames its
  files from `.staging/` into `.manifest/versions/` and the model dir (include/registry/publish.py,
  include/registry/store.py `renamed_between`), which only works within one file system;
- the model's registry reads (`read_manifest`; a damaged one raises ManifestError);
- there is room for another version as large as the newest published one on disk, plus
  MARGIN_BYTES: on the serving file system (publish's copy) and on the export one (the export),
  twice that when they are one.

A root in a bucket (`gs://...`, `s3://...`) is checked by what matters there: the bucket answers
and this process may write and delete in it, tried with a probe object `.probe-<uuid>` under the
dir (the error names the bucket and the Airflow connection used). A bucket has no file system to
share and no free space to run out of: neither is checked.

Nothing is created and nothing is left behind: a refused run leaves the serving tree as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from include.errors import PreflightError
from include.registry.store import (
    has_version_dir,
    published_versions,
    read_manifest,
    renamed_between,
    version_path,
)
from include.storage.location import BucketURI, location
from include.versions import model_dir, runs_dir

if TYPE_CHECKING:
    from include.config import PipelineConfig

log = logging.getLogger(__name__)

#: Room needed besides a version's own bytes: registry files, models.config, run records.
MARGIN_BYTES = 1 << 20
#: The probe file's name: a temp-file name, which the crash tests' leftover check would spot.
_PROBE = ".preflight-{}.tmp"
#: The probe object's name in a bucket.
_BUCKET_PROBE = ".probe-{}"


@dataclass(frozen=True)
class PreflightReport:
    """What preflight checked: where the run will write and how much room that needs and has."""

    model_dir: str
    runs_dir: str
    last_version: int | None
    needed_bytes: int  # on each file system (twice on one that holds both)
    free_bytes: dict[str, int]  # existing dir checked -> bytes free on its file system


def preflight(config: PipelineConfig, *, needed_bytes: int | None = None) -> PreflightReport:
    """Returns what was checked of a pipeline's storage; raises PreflightError or ManifestError.

    `needed_bytes` replaces the size of the newest published version (what the next one will need).
    """
    storage = config.storage
    return preflight_storage(
        storage.serving_root, storage.export_root, config.model.name, needed_bytes=needed_bytes
    )


def preflight_storage(
    serving_root: str | os.PathLike[str],
    export_root: str | os.PathLike[str],
    model_name: str,
    *,
    needed_bytes: int | None = None,
) -> PreflightReport:
    """Returns what was checked; raises PreflightError (or ManifestError) if publishing could not work."""
    base = model_dir(serving_root, model_name)
    serving = check_writable_dir(serving_root, "storage.serving_root")
    if not isinstance(serving, BucketURI):  # a bucket has no renames to keep on one file system
        serving = check_one_file_system(renamed_between(base), "the model dir")
    exports = check_writable_dir(runs_dir(export_root, model_name), "the runs dir under storage.export_root")
    last = last_published(base)
    if needed_bytes is not None:
        size, basis = needed_bytes, f"{needed_bytes:,} bytes asked for"
    elif last is not None:
        size, basis = (
            version_size(version_path(base, last)),
            f"the newest published version, {last}, is that large",
        )
    else:
        size, basis = 0, "nothing published yet"
    free = check_free_space(
        [a for a in (serving, exports) if not isinstance(a, BucketURI)], size + MARGIN_BYTES, basis
    )
    report = PreflightReport(str(base), str(exports), last, size + MARGIN_BYTES, free)
    log.info(
        "preflight: %s and %s are writable; %s bytes needed, free: %s",
        base,
        exports,
        f"{report.needed_bytes:,}",
        ", ".join(f"{path} {n:,}" for path, n in free.items()) or "(buckets: not checked)",
    )
    return report


def check_writable_dir(path: str | os.PathLike[str], what: str) -> Path | BucketURI:
    """Returns the dir that holds `path` or would (itself, else its nearest existing ancestor).

    Raises PreflightError unless `path` is a directory or can be created as one, and a file can
    be created in that dir. A bucket location is returned as it is once a probe object could be
    written and deleted under it (`check_writable_bucket`).
    """
    path = location(path)
    if isinstance(path, BucketURI):
        check_writable_bucket(path, what)
        return path
    anchor = existing_anchor(path, what)
    check_writable(anchor, path, what)
    return anchor


def existing_anchor(path: Path, what: str) -> Path:
    """Returns `path` if it is a directory, else its nearest existing ancestor if that is one.

    Raises PreflightError naming what is in the way: a file, a dangling symlink, an unreadable dir.
    """
    current = path
    while (found := _stat(current, path, what)) is None:
        if current.is_symlink():
            missing = f"{current} is a symlink to {os.readlink(current)}, which is missing"
            raise PreflightError(path, f"cannot be created ({what}): {missing}")
        if current.parent == current:
            break
        current = current.parent
    if found is not None and not stat.S_ISDIR(found.st_mode):
        kind = _kind(current, found)
        if current == path:
            raise PreflightError(path, f"is {kind}, expected a directory ({what})")
        raise PreflightError(path, f"cannot be created ({what}): {current} is {kind}, not a directory")
    return current


def check_writable(anchor: Path, path: Path, what: str) -> None:
    """Raises PreflightError unless a file can be created (and is removed again) in `anchor`."""
    where = "" if anchor == path else f" (it would be created in {anchor})"
    if os.statvfs(anchor).f_flag & os.ST_RDONLY:
        raise PreflightError(path, f"is on a read-only file system ({what}){where}")
    if not os.access(anchor, os.W_OK | os.X_OK):
        found = os.stat(anchor)
        raise PreflightError(
            path,
            f"is not writable ({what}): {anchor} has mode {stat.S_IMODE(found.st_mode):04o} and owner "
            f"uid {found.st_uid}, this process runs as uid {os.geteuid()}",
        )
    probe = anchor / _PROBE.format(uuid.uuid4().hex[:8])
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise PreflightError(
            path, f"is not writable ({what}): creating a file in {anchor} failed ({err.strerror or err})"
        ) from None


def check_writable_bucket(prefix: BucketURI, what: str) -> None:
    """Raises PreflightError unless a probe object can be written under `prefix` and deleted again.

    The message names the bucket and the Airflow connection it was opened with (or the default
    credentials): a missing bucket, a refused credential and an unreachable endpoint all end here.
    """
    from include.storage import objects

    probe = prefix / _BUCKET_PROBE.format(uuid.uuid4().hex)
    try:
        objects.write(probe, b"preflight probe: deleted at once\n")
        objects.delete(probe)
    except Exception as err:  # StorageError, or a client's own (no credentials, bad endpoint)
        conn = _connection_of(prefix)
        opened = (
            f"Airflow connection {conn!r}" if conn else "the provider's default credentials (no connection)"
        )
        raise PreflightError(
            prefix,
            f"is not writable ({what}): writing and deleting the probe object {probe.name} in bucket "
            f"{prefix.scheme}://{prefix.bucket} with {opened} failed: {type(err).__name__}: {err}",
        ) from None


def _connection_of(uri: BucketURI) -> str | None:
    """Returns the Airflow connection bound to `uri`'s bucket in this process (None: default chain)."""
    from include.storage import connections

    return connections.connection_of(uri)


def check_one_file_system(paths: list[Path], what: str) -> Path:
    """Returns the first path's anchor; raises PreflightError unless all are writable dirs on one file system.

    A path not there yet is judged by its nearest existing ancestor, where it would be created.
    """
    anchors = [existing_anchor(path, what) for path in paths]
    devices = [os.stat(anchor).st_dev for anchor in anchors]
    for path, device in zip(paths[1:], devices[1:], strict=True):
        if device != devices[0]:
            raise PreflightError(
                path,
                f"is on another file system (device {device}) than {paths[0]} (device {devices[0]}): "
                f"publish renames files between {', '.join(map(str, paths))}, "
                "which only works within one file system",
            )
    for anchor in dict.fromkeys(anchors):
        check_writable(anchor, paths[anchors.index(anchor)], what)
    return anchors[0]


def last_published(base: Path) -> int | None:
    """Returns the newest published version whose dir is on disk (None if none); reads the registry.

    Raises ManifestError if the registry is damaged: the run would fail at its end otherwise.
    """
    for version in reversed(published_versions(read_manifest(base))):
        if has_version_dir(base, version):
            return version
    return None


def version_size(version_dir: Path) -> int:
    """Returns the bytes of every file in a version dir (every object under it, in a bucket)."""
    if isinstance(location(str(version_dir)), BucketURI):
        from include.storage import objects

        return sum(found.size for found in objects.listing(BucketURI(str(version_dir))))
    return sum(path.stat().st_size for path in version_dir.rglob("*") if path.is_file())


def check_free_space(anchors: Iterable[Path], needed: int, basis: str) -> dict[str, int]:
    """Returns the bytes free at each anchor; raises PreflightError where fewer than needed are.

    Anchors on one file system share its free bytes, so they need `needed` each, together.
    `basis` says where `needed` comes from, for the message.
    """
    anchors = list(dict.fromkeys(anchors))
    by_device: dict[int, list[Path]] = {}
    for anchor in anchors:
        by_device.setdefault(os.stat(anchor).st_dev, []).append(anchor)
    free = {}
    for sharing in by_device.values():
        available = shutil.disk_usage(sharing[0]).free
        wanted = needed * len(sharing)
        if available < wanted:
            raise PreflightError(
                sharing[0],
                f"has {available:,} bytes free on its file system, expected at least {wanted:,} "
                f"({len(sharing)} x {needed:,} bytes for a version and the registry; {basis})",
            )
        free.update((str(anchor), available) for anchor in sharing)
    return free


def _stat(current: Path, path: Path, what: str) -> os.stat_result | None:
    """Returns os.stat of `current` (None if it does not exist); PreflightError if it cannot be read."""
    try:
        return os.stat(current)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise PreflightError(path, f"cannot be checked ({what}): {current}: {err.strerror or err}") from None


def _kind(path: Path, found: os.stat_result) -> str:
    """Returns what a non-directory is, in words: 'a file', 'a symlink to a file', ..."""
    kind = "a file" if stat.S_ISREG(found.st_mode) else "a special file (not a directory)"
    return f"a symlink to {kind}" if path.is_symlink() else kind
