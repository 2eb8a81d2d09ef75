"""Rebuild a model's registry from its version dirs on disk, keeping whatever can still be read.

For a registry damaged past reading (`read_manifest` raises ManifestError: a truncated or
hand-edited `manifest.json`, an entry that is not JSON or names another version, garbage in
`history.jsonl`). Under the model dir's lock:

- every complete version dir on disk gets an entry: its old one when that still reads and records
  the same content digest (lineage, metrics and status kept), else a new one from the dir itself
  (content digest, the dir's mtime as `published_at`, the version's date as `logical_date`);
  incomplete dirs are left alone and reported, never registered;
- readable entries of versions whose dir is gone are kept, marked deleted;
- labels come from the head if it reads, else from the label moves in the readable history lines;
  a label is kept only if its version is published on disk;
- the readable history lines are kept, the unreadable ones dropped, and a `rebuild` event added;
- the old registry files are copied to `.manifest/before-rebuild-<UTC time>/` first, untouched.

Then the entries, the history and, last, the head are written atomically, as publish writes them.
Reading what is left and writing the files is include/registry/store.py's (`salvage_registry`,
`replace_registry`); what to keep is decided here. A path that is no model dir (a version dir, a
serving root, a file, a dir with neither registry nor version dirs) is refused before anything
is written, the lock file included.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from include.durable import locked
from include.errors import RegistryError
from include.registry.store import (
    BACKUP_PREFIX,
    LABELS,
    Salvage,
    back_up_registry,
    model_dir_problem,
    now_iso,
    replace_registry,
    salvage_registry,
    version_dirs,
    version_path,
)
from include.savedmodel.files import content_digest, missing_parts
from include.storage.paths import is_remote
from include.versions import is_version_name

log = logging.getLogger(__name__)

__all__ = ["BACKUP_PREFIX", "RebuildReport", "check_model_dir", "rebuild_registry"]


@dataclass
class RebuildReport:
    """What a rebuild found and did: registered versions, kept and dropped labels, entries, history."""

    model_dir: str
    backup: str | None = None
    published: list[int] = field(default_factory=list)
    entries_kept: list[int] = field(default_factory=list)  # old entries that still read, lineage kept
    entries_rebuilt: list[int] = field(default_factory=list)  # made from the version dir alone
    labels: dict[str, int] = field(default_factory=dict)
    labels_dropped: list[str] = field(default_factory=list)
    history_kept: int = 0
    history_dropped: int = 0
    skipped: list[str] = field(default_factory=list)  # version dirs not registered, and why
    damaged: list[str] = field(default_factory=list)  # what could not be read

    def to_dict(self) -> dict:
        """Returns the report as a plain dict."""
        return asdict(self)

    def summary(self) -> str:
        """Returns the report as a few lines for the command line and the log."""
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "none"
        lines = [
            f"rebuilt the registry of {self.model_dir}",
            f"  published versions: {', '.join(map(str, self.published)) or 'none'}",
            f"  entries kept: {len(self.entries_kept)}, rebuilt from their dirs: {len(self.entries_rebuilt)}",
            f"  labels: {labels}",
            f"  history lines kept: {self.history_kept}, dropped: {self.history_dropped}",
        ]
        lines += [f"  label dropped: {item}" for item in self.labels_dropped]
        lines += [f"  not registered: {item}" for item in self.skipped]
        lines += [f"  damaged: {item}" for item in self.damaged]
        if self.backup:
            lines.append(f"  the old registry files are kept in {self.backup}")
        return "\n".join(lines)


def rebuild_registry(model_dir: str | os.PathLike[str], *, by: str = "rebuild") -> RebuildReport:
    """Rebuilds a model's registry from its version dirs and what still reads; returns the report.

    Holds the model dir's lock, so it waits for a publisher and no publisher runs meanwhile.
    """
    if is_remote(model_dir):
        raise RegistryError(
            f"{model_dir}: rebuild works on a local model dir only; copy the model dir from the bucket "
            "(gcloud storage rsync / aws s3 sync), rebuild the copy, then copy its registry files back"
        )
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    report = RebuildReport(str(model_dir))
    with locked(model_dir):
        salvage = salvage_registry(model_dir)
        report.damaged += salvage.damaged
        report.history_dropped = salvage.history_dropped
        entries = _entries(model_dir, salvage, report)
        report.labels = _labels(salvage, report)
        report.history_kept = len(salvage.history)
        report.backup = back_up_registry(model_dir)
        history = [*salvage.history, _rebuild_event(report, by)]
        replace_registry(
            model_dir,
            model=salvage.model,
            serving=salvage.serving,
            labels=report.labels,
            entries=entries,
            history=history,
        )
    log.info("%s", report.summary())
    return report


def check_model_dir(path: Path) -> None:
    """Raises RegistryError, before anything is written, unless `path` is a model dir."""
    problem = model_dir_problem(path)
    if problem:
        raise RegistryError(
            f"{path} {problem}: expected a model dir (<serving_root>/<model>, holding manifest.json, "
            ".manifest/ or version dirs); nothing was written"
        )


def _entries(model_dir: Path, salvage: Salvage, report: RebuildReport) -> dict[int, dict]:
    """Returns the new entries: one per complete version dir on disk, plus the old ones of gone dirs."""
    on_disk = version_dirs(model_dir)
    entries: dict[int, dict] = {}
    for version in on_disk:
        version_dir = version_path(model_dir, version)
        problems = missing_parts(version_dir)
        if problems:
            report.skipped.append(f"{version_dir}: incomplete ({'; '.join(problems)})")
            continue
        entries[version] = _entry_for_dir(version, version_dir, salvage.entries.get(version), report)
    for version, old in salvage.entries.items():
        if version not in entries and version not in on_disk:
            entries[version] = _entry_of_gone_dir(old)
    report.published = sorted(v for v, e in entries.items() if e["status"] == "published")
    return dict(sorted(entries.items()))


def _entry_for_dir(version: int, version_dir: Path, old: dict | None, report: RebuildReport) -> dict:
    """Returns the entry of a complete version dir: its old entry if it holds the same content."""
    digest = content_digest(version_dir)
    if old is not None and old.get("content_digest") in (None, digest):
        report.entries_kept.append(version)
        return {**old, "content_digest": digest}
    if old is not None:
        report.damaged.append(
            f"entry of version {version} records content sha256 {old['content_digest'][:12]}, its dir "
            f"holds {digest[:12]}: entry rebuilt from the dir"
        )
    report.entries_rebuilt.append(version)
    mtime = dt.datetime.fromtimestamp(version_dir.stat().st_mtime, dt.UTC)
    entry = {
        "version": version,
        "content_digest": digest,
        "status": "published",
        "published_at": mtime.isoformat(timespec="seconds"),
        "last_publish": "rebuilt",
        "rebuilt_at": now_iso(),
    }
    logical_date = _version_date(version)
    if logical_date:
        entry["logical_date"] = logical_date
    return entry


def _entry_of_gone_dir(old: dict) -> dict:
    """Returns the entry of a version whose dir is gone: kept, and deleted if it said published."""
    if old.get("status") == "published":
        return {**old, "status": "deleted", "deleted_at": now_iso(), "deleted_by": "rebuild: no dir on disk"}
    return old


def _version_date(version: int) -> str | None:
    """Returns the UTC date a version number encodes (YYYYMMDDHHMMSS), None if it encodes none."""
    try:
        when = dt.datetime.strptime(str(version), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return when.isoformat()


def _labels(salvage: Salvage, report: RebuildReport) -> dict[str, int]:
    """Returns the labels to keep: the head's (else the history's) that point at published versions."""
    found = dict(salvage.labels) if salvage.labels is not None else None
    if found is None:
        found = {}
        for event in salvage.history:  # replay the label moves, in order
            if event.get("event") == "label" and isinstance(event.get("label"), str):
                found[event["label"]] = event.get("version")
    kept = {}
    for label, version in sorted(found.items()):
        if isinstance(version, str) and is_version_name(version):  # hand-edited as a string
            version = int(version)
        if label in LABELS and version in report.published and not isinstance(version, bool):
            kept[label] = version
        elif version is not None:
            why = "not a label" if label not in LABELS else "not a published version on disk"
            report.labels_dropped.append(f"{label} -> {version!r} ({why})")
    return kept


def _rebuild_event(report: RebuildReport, by: str) -> dict:
    """Returns the history event that records the rebuild."""
    return {
        "event": "rebuild",
        "at": now_iso(),
        "by": by,
        "reason": "registry rebuilt from the version dirs on disk",
        "published": report.published,
        "labels": report.labels,
        "entries_rebuilt": report.entries_rebuilt,
        "history_dropped": report.history_dropped,
    }
