"""The registry's policy: which version is the baseline, labels and their moves, promotion, retention.

Everything here changes a model's registry through `include.registry.store` (the on-disk format)
under the model dir's lock; `promote` also rewrites TF Serving's models.config.

Moves apply in request order. A move requested at time T expects its label where the moves
asked for before T left it (`label_as_of`): a move asked for later that landed first (it was
scheduled first, or approved first) overtook it, and the earlier request is refused
(PremiseChanged) instead of being applied over the later one. Requests that land in the order
they were made all apply, the last one made last.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from include import versions
from include.durable import locked
from include.errors import RegistryError
from include.registry.approvals import parse_time
from include.registry.serving_config import write_models_config
from include.registry.store import (
    LABELS,
    ManifestUpdate,
    has_registry,
    manifest_update,
    now_iso,
    published_versions,
    read_head,
    read_history_from,
    read_manifest,
    version_path,
    version_problems,
)
from include.storage import objects
from include.storage.paths import is_remote, uri_of
from include.text import control_character_problem

log = logging.getLogger(__name__)


class PremiseChanged(RegistryError):
    """A label moved while a request to move it waited: the move no longer means what was asked for."""

    def __init__(self, model: str, label: str, requested: int | None, now: int | None) -> None:
        self.model, self.label, self.requested, self.now = model, label, requested, now
        super().__init__(
            f"{label} of {model} was version {requested} when the move was requested and is version "
            f"{now} now: the move is refused and nothing moved; request it again if it still holds"
        )


def baseline(manifest: dict) -> dict | None:
    """Returns the entry to compare a candidate with: the `stable` version, else the newest."""
    versions = published_versions(manifest)
    stable = manifest["labels"].get("stable")
    if stable is not None and stable in versions:
        return manifest["versions"][str(stable)]
    return manifest["versions"][str(versions[-1])] if versions else None


def auto_label(update: ManifestUpdate, version: int) -> list[str]:
    """Labels a newly published version; returns the labels it got.

    The newest version becomes `canary`; it becomes `stable` too when nothing is stable yet.
    An older version (a backfill) gets no label, so it never displaces what is served.
    """
    newest = update.newest()
    given = []
    if version >= (newest[-1] if newest else version):
        given.append("canary")
    if not update.is_published(update.labels.get("stable")):
        given.append("stable")
    for label in given:
        _move_label(update, label, version, by="publish", reason="automatic on publish")
    return given


def _move_label(update: ManifestUpdate, label: str, version: int, *, by: str, reason: str, **details) -> None:
    """Points `label` at `version` and records the move in the history."""
    update.labels[label] = version
    update.record_event(
        {"event": "label", "label": label, "version": version, **details}, by=by, reason=reason
    )


def label_as_of(history: list[dict], label: str, when: dt.datetime, current: int | None) -> int | None:
    """Returns where `label` points for a request made at `when`: as the moves asked for before it left it.

    A move counts from when it was asked for (`requested_at` of a promote move), else from when it
    was made (`at`). A rebuild sets the labels anew: only the moves after the last one count, from
    where it left the label. `current` when the history records neither.
    """
    where, moves, rebuilt = current, [], False
    for event in history:
        if event.get("event") == "rebuild" and isinstance(event.get("labels"), dict):
            where, moves, rebuilt = event["labels"].get(label), [], True
        elif event.get("event") == "label" and event.get("label") == label:
            moves.append(event)
    if not moves:
        return where
    if not rebuilt:
        where = moves[0].get("previous")
    for move in moves:  # in the order they landed: the last one asked for before `when` wins
        if parse_time(move.get("requested_at") or move.get("at")) <= when:
            where = move.get("version")
    return where


def request_premise(model_dir: Path, label: str, requested_at: str | None) -> tuple[int | None, int | None]:
    """Returns (where `label` should point for a request made at `requested_at`, where it points now)."""
    head = read_head(model_dir)
    now = head["labels"].get(label)
    if requested_at is None:
        return now, now
    history = read_history_from(model_dir, (0, 0), head["history_bytes"])[0]
    return label_as_of(history, label, parse_time(requested_at), now), now


def check_reason(reason: str) -> None:
    """Raises RegistryError unless `reason` is non-blank text without control characters."""
    if not reason.strip():
        raise RegistryError("reason: moving a label needs a reason")
    if problem := control_character_problem("reason", reason):
        raise RegistryError(problem)


def set_label(
    model_dir: Path,
    label: str,
    version: int,
    *,
    by: str,
    reason: str,
    premise: Mapping[str, int | None] | None = None,
    requested_at: str | None = None,
) -> dict:
    """Moves `label` to an existing, complete published version; returns the manifest.

    `premise`: labels as they were when the move was asked for; if one points elsewhere now (other
    than where this move puts it), the move is refused (PremiseChanged) and nothing changes.
    `requested_at` (ISO time): when the move was asked for; recorded with it, and unless `premise`
    names the label, the label must be where the moves asked for before then left it (`label_as_of`).
    """
    if label not in LABELS:
        raise RegistryError(f"label: expected one of {list(LABELS)}, got {label!r}")
    check_reason(reason)
    with locked(model_dir):
        with manifest_update(model_dir) as update:
            premise = dict(premise or {})
            if requested_at is not None and label not in premise:
                premise[label] = label_as_of(
                    update.history(), label, parse_time(requested_at), update.labels.get(label)
                )
            for held, expected in premise.items():
                now = update.labels.get(held)
                # Already where this move puts it: a retry after the move itself (models.config
                # failed, say) finds its own work, not a change of premise.
                if now != expected and not (held == label and now == version):
                    raise PremiseChanged(update.model, held, expected, now)
            if not update.is_published(version):
                raise RegistryError(
                    f"version {version} is not a published version of {update.model} "
                    f"(published: {published_versions(read_manifest(model_dir))})"
                )
            problems = version_problems(version_path(model_dir, version))
            if problems:
                raise RegistryError(f"version {version} is not complete: {'; '.join(problems)}")
            when = {"requested_at": requested_at} if requested_at else {}
            _move_label(
                update, label, version, by=by, reason=reason, previous=update.labels.get(label), **when
            )
        return read_manifest(model_dir)


def check_loadable(version_dir: Path) -> None:
    """Raises RegistryError unless TensorFlow can load the SavedModel and sees its signatures."""
    import tensorflow as tf

    problems = version_problems(version_dir)
    if problems:
        raise RegistryError(f"{version_dir} is not complete: {'; '.join(problems)}")
    if is_remote(version_dir):  # TensorFlow reads no s3:// and no emulator: load a fresh copy
        with tempfile.TemporaryDirectory(prefix="loadable-") as tmp:
            objects.download_tree(uri_of(version_dir), tmp)
            return check_loadable(Path(tmp))
    try:
        loaded = tf.saved_model.load(str(version_dir), tags=["serve"])
    except Exception as err:
        raise RegistryError(f"{version_dir} does not load: {type(err).__name__}: {err}") from None
    if not loaded.signatures:
        raise RegistryError(f"{version_dir} loads but has no signatures")


def promote(
    serving_root: Path,
    model_name: str,
    version: int,
    label: str,
    *,
    by: str,
    reason: str,
    premise: Mapping[str, int | None] | None = None,
    requested_at: str | None = None,
) -> dict:
    """Moves `label` to a published version after checking it is complete and loadable.

    This is rollback too: point `stable` back at an older version. Regenerates models.config.
    `premise` and `requested_at` as in `set_label`. Returns the manifest.
    """
    check_reason(reason)
    model_dir = versions.model_dir(serving_root, model_name)
    if not has_registry(model_dir):
        raise RegistryError(f"no published model {model_name!r} under {serving_root}")
    published = published_versions(read_manifest(model_dir))
    if version not in published:
        raise RegistryError(
            f"version {version} is not a published version of {model_name} (published: {published})"
        )
    check_loadable(version_path(model_dir, version))
    manifest = set_label(
        model_dir, label, version, by=by, reason=reason, premise=premise, requested_at=requested_at
    )
    write_models_config(serving_root)
    log.info("%s of %s now points at version %s (by %s: %s)", label, model_name, version, by, reason)
    return manifest


def apply_retention(update: ManifestUpdate, keep: int | None) -> list[int]:
    """Deletes the oldest versions beyond `keep`, sparing labelled ones and the newest.

    The caller holds the lock and commits `update`: the entries say deleted, then each dir is
    renamed into the staging dir (TF Serving sees it vanish at once) and removed. Dirs whose
    entries already say deleted (a crash cut their removal short) go too. Returns the deleted
    versions.
    """
    if keep is None:
        return []
    on_disk = update.versions_on_disk()
    for version in [v for v, status in on_disk if status == "deleted"]:
        log.warning("retention: removing version %s of %s, deleted before a crash", version, update.model)
        update.remove_after_commit(version)
    versions = [v for v, status in on_disk if status == "published"]
    if len(versions) <= keep:
        return []
    protected = {v for v in update.labels.values() if v is not None} | {versions[-1]}
    deleted = []
    for version in versions[: len(versions) - keep]:
        if version in protected:
            continue
        update.put_entry(version, {**update.entry(version), "status": "deleted", "deleted_at": now_iso()})
        update.remove_after_commit(version)
        update.record_event(
            {"event": "delete", "version": version}, by="retention", reason=f"keep_versions={keep}"
        )
        log.info("retention: deleted version %s of %s (keep_versions=%s)", version, update.model, keep)
        deleted.append(version)
    return deleted
