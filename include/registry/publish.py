"""Publish: promote an exported SavedModel into the serving tree atomically and record it.

Steps, all under the model dir's lock: verify the export, copy it into the model dir's staging
dir (`.staging/`, on the serving filesystem), flush and re-verify it, then `rename` it to the
numeric version name. TensorFlow Serving ignores non-numeric names, so it never sees a
half-written version. Then the manifest records it (include/registry/store.py): one entry, a history
line or two and the small head, whatever the number of versions.

In a bucket there is no rename, so the order of the writes keeps TF Serving's guarantee instead
(the TFX Pusher's order), all under the model dir's lease (include/storage/objects.py):

1. a version prefix without `saved_model.pb` is a crashed upload's leftovers: overwritten;
   replacing a version (force) deletes its `saved_model.pb` first, so TF Serving stops loading it;
2. every file of the export except `saved_model.pb` is uploaded and verified (size, md5/ETag);
3. objects under the prefix that the export does not hold are deleted;
4. `saved_model.pb` is uploaded and verified last: from then on TF Serving may load the version;
5. the version's entry, the history and then the head are written (the head conditionally on
   the one read), which commits the publish; then `models.config`.

No numeric prefix ever holds a `saved_model.pb` of an incomplete version; a publish killed at
any step leaves nothing TF Serving loads, and its retry completes it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from include.durable import fsync_path, fsync_tree, locked
from include.errors import IncompleteModelError, RunParamsError, StorageError, VersionConflictError
from include.failpoints import failpoint
from include.registry.policy import apply_retention, auto_label
from include.registry.serving_config import write_models_config
from include.registry.store import (
    ManifestUpdate,
    clear_staging,
    manifest_update,
    now_iso,
    staging_path,
    version_path,
)
from include.savedmodel.files import SAVED_MODEL_PB, content_digest, missing_parts
from include.storage import objects
from include.storage.location import BucketURI
from include.storage.paths import is_remote, uri_of
from include.versions import model_dir, parse_version

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class PublishResult:
    """What publish hands on: the version, where it is served from and what happened."""

    version: int
    path: str
    content_digest: str
    status: str  # "published", "unchanged" or "replaced"
    labels: list[str] = field(default_factory=list)  # labels this publish gave the version
    deleted: list[int] = field(default_factory=list)  # versions removed by retention

    def to_dict(self) -> dict:
        """Returns the result as a plain dict."""
        return asdict(self)


def publish_version(
    export_path: str | os.PathLike[str],
    serving_root: str | os.PathLike[str],
    model_name: str,
    version: int,
    *,
    force: bool = False,
    force_reason: str | None = None,
    record: dict | None = None,
    keep_versions: int | None = None,
    serving_policy: dict | None = None,
    expected_digest: str | None = None,
) -> PublishResult:
    """Returns the result of promoting `export_path` to `<serving_root>/<model>/<version>`.

    Identical content already published is a no-op success; different content raises
    VersionConflictError unless `force` (with a reason) asks to replace it. Then, under the
    same lock: the manifest records the version, the newest version is labelled `canary`
    (and `stable` if nothing is), retention keeps `keep_versions`; finally the serving root's
    `models.config` is regenerated. With `expected_digest` (of the export as verified), any other
    content is refused.
    """
    version = parse_version(version)
    if force and not (force_reason or "").strip():
        raise RunParamsError("force_publish needs a non-empty force_reason")
    export_path = Path(export_path)
    problems = missing_parts(export_path)
    if problems:
        raise IncompleteModelError(str(export_path), problems)
    digest = content_digest(export_path)
    if expected_digest is not None and digest != expected_digest:
        # The export changed after it was verified: publish only what was checked.
        raise IncompleteModelError(
            str(export_path), [f"content sha256 {digest[:12]} is not the verified {expected_digest[:12]}"]
        )
    base = model_dir(serving_root, model_name)
    target = version_path(base, version)
    remote = is_remote(target)

    with locked(base), manifest_update(base) as update:  # migrates a manifest of before
        clear_staging(base)
        status = "published"
        if remote:
            existing = _remote_digest(target)
            if existing is not None and existing != digest and not force:
                raise VersionConflictError(str(target), existing, digest)
            if existing is not None:
                status = "unchanged" if existing == digest else "replaced"
        elif target.exists():
            existing = content_digest(target) if not missing_parts(target) else "incomplete"
            if existing != digest and not force:
                raise VersionConflictError(str(target), existing, digest)
            status = "unchanged" if existing == digest else "replaced"
        if status == "unchanged":
            log.info("version %s already holds this content (sha256 %s): nothing to do", target, digest[:12])
        elif remote:
            _upload_in_order(export_path, uri_of(target), replace=status == "replaced")
        else:
            _put_in_place(export_path, base, target, digest, replace=status == "replaced")
            if status == "replaced":
                log.warning("replaced version %s (force_publish: %s)", target, force_reason)
        labels, deleted = _record(
            update, version, digest, status, record, force_reason, keep_versions, serving_policy
        )
    write_models_config(serving_root)
    if status != "unchanged":
        log.info(
            "published version %s of %s at %s (sha256 %s, labels %s)",
            version,
            model_name,
            target,
            digest[:12],
            labels or "none",
        )
    return PublishResult(version, str(target), digest, status, labels, deleted)


def _put_in_place(export_path: Path, base: Path, target: Path, digest: str, *, replace: bool) -> None:
    """Copies the export into a staging dir, flushes and re-verifies it, then renames it to `target`.

    With `replace`, swaps it with the version there atomically. Lock held.
    """
    staging = staging_path(base, f"{target.name}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            staging.parent.mkdir(exist_ok=True)
            shutil.copytree(export_path, staging)
            fsync_tree(staging)
        except OSError as err:
            raise StorageError(f"cannot write {staging}: {err.strerror or err}") from err
        staged_problems = missing_parts(staging)
        if staged_problems:
            raise IncompleteModelError(str(staging), staged_problems)
        staged = content_digest(staging)
        if staged != digest:
            raise IncompleteModelError(str(staging), [f"copy digest {staged[:12]} != source {digest[:12]}"])
        if replace:
            _exchange(staging, target)  # staging now holds the old version
        else:
            os.rename(staging, target)
        fsync_path(base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remote_digest(target) -> str | None:
    """Returns the content digest of a published version in a bucket; None if it has no saved_model.pb.

    A prefix without `saved_model.pb` holds what an upload left when it died (nothing TF Serving
    loads): the publish overwrites it. The digest reads the version's objects (a temp copy).
    """
    if not (target / SAVED_MODEL_PB).exists():
        return None
    with tempfile.TemporaryDirectory(prefix="published-") as tmp:
        objects.download_tree(uri_of(target), tmp)
        problems = missing_parts(tmp)
        return "incomplete" if problems else content_digest(tmp)


def _upload_in_order(export_path: Path, target: BucketURI, *, replace: bool) -> None:
    """Puts an export at a bucket version prefix so that TF Serving never sees it incomplete.

    `saved_model.pb` goes last, each object verified; objects of an earlier content or a crashed
    upload that the export does not hold are deleted before it. Lease held.
    """
    if replace:
        objects.delete(target / SAVED_MODEL_PB)  # TF Serving stops loading the old content first
    names = sorted(p.relative_to(export_path).as_posix() for p in export_path.rglob("*") if p.is_file())
    stale = [s.uri for s in objects.listing(target) if s.uri.relative_to(target) not in names]
    stats = []
    for name in (n for n in names if n != SAVED_MODEL_PB):
        stats.append(objects.upload_file(export_path / name, target / name))
        failpoint("publish.upload")
    for uri in stale:
        objects.delete(uri)
    stats.append(objects.upload_file(export_path / SAVED_MODEL_PB, target / SAVED_MODEL_PB))
    size = sum(s.size for s in stats)
    log.info("uploaded %d objects (%d bytes) to %s, saved_model.pb last", len(stats), size, target)


def _record(
    update: ManifestUpdate,
    version: int,
    digest: str,
    status: str,
    record: dict | None,
    force_reason: str | None,
    keep_versions: int | None,
    serving_policy: dict | None,
) -> tuple[list[str], list[int]]:
    """Records one publish in the manifest; returns (labels given, versions deleted). Lock held.

    Touches this version's entry, the labels and retention's victims, never the other entries.
    """
    previous = update.entry(version)
    newest = update.newest()
    # A rerun of a publish killed before its record was committed finds the content in place:
    # no entry (killed after the rename), or an entry newer than any the head knows (killed
    # before the head). That is still the version's first record, so it gets its labels.
    first_record = previous is None or (version not in newest and version > max(newest, default=0))
    now = now_iso()
    entry = {
        **(previous or {}),
        **(record or {}),
        "version": version,
        "content_digest": digest,
        "status": "published",
        "published_at": (previous or {}).get("published_at", now) if status == "unchanged" else now,
        "last_publish": status,
    }
    if force_reason:
        entry["force_reason"] = force_reason
    update.put_entry(version, entry)
    if serving_policy:
        update.set_serving(serving_policy)
    labels = auto_label(update, version) if status != "unchanged" or first_record else []
    return labels, apply_retention(update, keep_versions)


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
