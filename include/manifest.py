"""A model's manifest on disk, and the policy it records: labels, promotion and retention.

Each model dir holds `manifest.json` (a non-numeric name, so TF Serving ignores it):

    {"model": "digits",
     "serving": {"version_policy": "latest", "num_latest": 2},
     "labels": {"stable": 20261012000000, "canary": 20261126000000},
     "versions": {"20261012000000": {...lineage..., "status": "published"}, ...},
     "history": [{"event": "label", "label": "stable", "version": ..., "by": ..., "reason": ...}, ...]}

Every change happens under the model dir's lock and is written atomically (include/durable.py),
so readers never see a torn file and concurrent publishers lose nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from include.durable import locked, write_text_atomic
from include.errors import RegistryError
from include.savedmodel_dir import missing_parts

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
LABELS = ("stable", "canary")


def now_iso() -> str:
    """Returns the current UTC time as ISO 8601 (registry timestamps only, never versions)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_manifest(model_dir: str | os.PathLike[str]) -> dict:
    """Returns a model's manifest (an empty one if none was written yet)."""
    path = Path(model_dir) / MANIFEST_FILE
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest.setdefault("model", Path(model_dir).name)
    manifest.setdefault("labels", {})
    manifest.setdefault("versions", {})
    manifest.setdefault("history", [])
    return manifest


def update_manifest(model_dir: Path, change: Callable[[dict], None]) -> dict:
    """Applies `change` to the manifest and writes it atomically; the caller holds the lock."""
    manifest = read_manifest(model_dir)
    change(manifest)
    manifest["versions"] = dict(sorted(manifest["versions"].items(), key=lambda kv: int(kv[0])))
    write_text_atomic(model_dir / MANIFEST_FILE, dumps_manifest(manifest))
    return manifest


_COMPACT_JSON = json.JSONEncoder(sort_keys=True, default=str)


def dumps_manifest(data: dict) -> str:
    """Returns the manifest as JSON with one line per version, label and history event.

    Readable and greppable like `indent=2`, but each line is encoded by json's C encoder (which
    `indent` turns off): a 10,000-version manifest encodes about 4x faster.
    Versions keep their numeric order (`sort_keys` would put "10" before "9").
    """

    compact = _COMPACT_JSON.encode
    fields = []
    for key, value in sorted(data.items()):
        if isinstance(value, dict) and value:
            lines = [f"    {compact(str(k))}: {compact(v)}" for k, v in value.items()]
            fields.append(f"  {compact(key)}: {{\n" + ",\n".join(lines) + "\n  }")
        elif isinstance(value, list) and value:
            fields.append(f"  {compact(key)}: [\n" + ",\n".join(f"    {compact(v)}" for v in value) + "\n  ]")
        else:
            fields.append(f"  {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def published_versions(manifest: dict) -> list[int]:
    """Returns the versions currently published (not deleted), oldest first."""
    return sorted(int(v) for v, e in manifest["versions"].items() if e.get("status") == "published")


def baseline(manifest: dict) -> dict | None:
    """Returns the entry to compare a candidate with: the `stable` version, else the newest."""
    versions = published_versions(manifest)
    stable = manifest["labels"].get("stable")
    if stable is not None and stable in versions:
        return manifest["versions"][str(stable)]
    return manifest["versions"][str(versions[-1])] if versions else None


def auto_label(manifest: dict, version: int) -> list[str]:
    """Labels a newly published version; returns the labels it got.

    The newest version becomes `canary`; it becomes `stable` too when nothing is stable yet.
    An older version (a backfill) gets no label, so it never displaces what is served.
    """
    published = published_versions(manifest)
    given = []
    if version >= max(published, default=version):
        given.append("canary")
    if manifest["labels"].get("stable") not in published:
        given.append("stable")
    for label in given:
        _move_label(manifest, label, version, by="publish", reason="automatic on publish")
    return given


def _move_label(manifest: dict, label: str, version: int, *, by: str, reason: str, **details) -> None:
    """Points `label` at `version` in the manifest and records the move in its history."""
    manifest["labels"][label] = version
    event = {"event": "label", "label": label, "version": version, **details}
    manifest["history"].append({**event, "at": now_iso(), "by": by, "reason": reason})


def set_label(model_dir: Path, label: str, version: int, *, by: str, reason: str) -> dict:
    """Moves `label` to an existing, complete published version; returns the manifest."""
    if label not in LABELS:
        raise RegistryError(f"label: expected one of {list(LABELS)}, got {label!r}")
    if not reason.strip():
        raise RegistryError("reason: moving a label needs a reason")
    with locked(model_dir):
        manifest = read_manifest(model_dir)
        if version not in published_versions(manifest):
            raise RegistryError(
                f"version {version} is not a published version of {manifest['model']} "
                f"(published: {published_versions(manifest)})"
            )
        problems = missing_parts(model_dir / str(version))
        if problems:
            raise RegistryError(f"version {version} is not complete: {'; '.join(problems)}")

        def change(m: dict) -> None:
            _move_label(m, label, version, by=by, reason=reason, previous=m["labels"].get(label))

        return update_manifest(model_dir, change)


def check_loadable(version_dir: Path) -> None:
    """Raises RegistryError unless TensorFlow can load the SavedModel and sees its signatures."""
    import tensorflow as tf

    problems = missing_parts(version_dir)
    if problems:
        raise RegistryError(f"{version_dir} is not complete: {'; '.join(problems)}")
    try:
        loaded = tf.saved_model.load(str(version_dir), tags=["serve"])
    except Exception as err:
        raise RegistryError(f"{version_dir} does not load: {type(err).__name__}: {err}") from None
    if not loaded.signatures:
        raise RegistryError(f"{version_dir} loads but has no signatures")


def promote(serving_root: Path, model_name: str, version: int, label: str, *, by: str, reason: str) -> dict:
    """Moves `label` to a published version after checking it is complete and loadable.

    This is rollback too: point `stable` back at an older version. Regenerates models.config.
    Returns the manifest.
    """
    # serving_config renders manifests, so it imports this module; importing it here keeps
    # that dependency one way.
    from include.serving_config import write_models_config

    model_dir = Path(serving_root) / model_name
    if not (model_dir / MANIFEST_FILE).is_file():
        raise RegistryError(f"no published model {model_name!r} under {serving_root}")
    published = published_versions(read_manifest(model_dir))
    if version not in published:
        raise RegistryError(
            f"version {version} is not a published version of {model_name} (published: {published})"
        )
    check_loadable(model_dir / str(version))
    manifest = set_label(model_dir, label, version, by=by, reason=reason)
    write_models_config(Path(serving_root))
    log.info("%s of %s now points at version %s (by %s: %s)", label, model_name, version, by, reason)
    return manifest


def apply_retention(model_dir: Path, manifest: dict, keep: int | None) -> list[int]:
    """Deletes the oldest versions beyond `keep`, sparing labelled ones and the newest.

    The caller holds the lock and writes the manifest. Each version is first renamed to a
    hidden name (TF Serving sees it vanish at once), then removed. Returns the deleted versions.
    """
    versions = published_versions(manifest)
    if keep is None or len(versions) <= keep:
        return []
    protected = {v for v in manifest["labels"].values() if v is not None} | {versions[-1]}
    deleted = []
    for version in versions[: len(versions) - keep]:
        if version in protected:
            continue
        doomed = model_dir / f".deleting-{version}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(model_dir / str(version), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        entry = manifest["versions"][str(version)]
        entry.update(status="deleted", deleted_at=now_iso())
        manifest["history"].append(
            {
                "event": "delete",
                "version": version,
                "at": now_iso(),
                "by": "retention",
                "reason": f"keep_versions={keep}",
            }
        )
        log.info("retention: deleted version %s of %s (keep_versions=%s)", version, manifest["model"], keep)
        deleted.append(version)
    return deleted
