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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from include.durable import fsync_path, locked, write_text_atomic
from include.errors import ManifestError, RegistryError
from include.registry.store import (
    HISTORY_FILE,
    LABELS,
    MANIFEST_FILE,
    RECORDS_DIR,
    VERSIONS_DIR,
    _dumps_entry,
    _dumps_head,
    _make_dir,
    _new_head,
    _read_json,
    _serving_problems,
    _staging_dir,
    entry_problems,
    history_event,
    now_iso,
    read_entry,
)
from include.savedmodel.files import content_digest, missing_parts
from include.versions import is_version_name

log = logging.getLogger(__name__)

BACKUP_PREFIX = "before-rebuild-"


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


@dataclass
class _Salvage:
    """What could still be read from a damaged registry."""

    head: dict
    labels: dict | None = None  # None: the head's labels could not be read
    committed: int | None = None  # history bytes the head commits, if it reads
    entries: dict[int, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def rebuild_registry(model_dir: str | os.PathLike[str], *, by: str = "rebuild") -> RebuildReport:
    """Rebuilds a model's registry from its version dirs and what still reads; returns the report.

    Holds the model dir's lock, so it waits for a publisher and no publisher runs meanwhile.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RegistryError(f"{model_dir}: expected a model dir (<serving_root>/<model>), found none")
    report = RebuildReport(str(model_dir))
    with locked(model_dir):
        salvage = _salvage(model_dir, report)
        entries = _entries(model_dir, salvage, report)
        report.labels = _labels(salvage, report)
        report.history_kept = len(salvage.history)
        report.backup = _back_up(model_dir)
        history = [*salvage.history, _rebuild_event(report, by)]
        _write(model_dir, salvage.head, entries, report.labels, history)
    log.info("%s", report.summary())
    return report


def _salvage(model_dir: Path, report: RebuildReport) -> _Salvage:
    """Returns what still reads of the head, the entries and the history; notes the rest as damaged."""
    salvage = _Salvage(head=_new_head(model_dir))
    _salvage_head(model_dir, salvage, report)
    _salvage_entries(model_dir, salvage, report)
    _salvage_history(model_dir, salvage, report)
    return salvage


def _salvage_head(model_dir: Path, salvage: _Salvage, report: RebuildReport) -> None:
    """Keeps the head's model name, serving policy and labels, each if it still reads."""
    path = model_dir / MANIFEST_FILE
    try:
        found = _read_json(path, model_dir)
    except ManifestError as err:
        report.damaged.append(f"{path}: {err.problem}")
        return
    if found is None:
        return
    if isinstance(found.get("model"), str) and found["model"]:
        salvage.head["model"] = found["model"]
    serving = found.get("serving")
    if isinstance(serving, dict) and not _serving_problems(serving):
        salvage.head["serving"] = dict(serving)
    elif "serving" in found:
        report.damaged.append(f"{path}: serving policy unreadable, left to the next publish")
    if isinstance(found.get("labels"), dict):
        salvage.labels = found["labels"]
    if "format" not in found:  # the single file of before: entries and history inside
        _salvage_single_file(path, found, salvage, report)
    elif isinstance(found.get("history_bytes"), int) and found["history_bytes"] >= 0:
        salvage.committed = found["history_bytes"]


def _salvage_single_file(path: Path, found: dict, salvage: _Salvage, report: RebuildReport) -> None:
    """Keeps the readable entries and history events of a single-file manifest of before."""
    versions = found.get("versions")
    for key, entry in (versions if isinstance(versions, dict) else {}).items():
        if is_version_name(key) and isinstance(entry, dict) and not entry_problems(entry, int(key)):
            salvage.entries[int(key)] = entry
        else:
            report.damaged.append(f"{path}: entry {key!r} unreadable")
    history = found.get("history")
    for event in history if isinstance(history, list) else []:
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            salvage.history.append(event)
        else:
            report.history_dropped += 1


def _salvage_entries(model_dir: Path, salvage: _Salvage, report: RebuildReport) -> None:
    """Keeps every entry file under .manifest/versions/ that still reads and agrees with its name."""
    try:
        names = sorted(os.listdir(model_dir / VERSIONS_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        stem = name.removesuffix(".json")
        if name.endswith(".json") and is_version_name(stem):
            try:
                entry = read_entry(model_dir, int(stem))
            except ManifestError as err:
                report.damaged.append(f"{err.path}: {err.problem}")
                continue
            if entry is not None:
                salvage.entries[int(stem)] = entry


def _salvage_history(model_dir: Path, salvage: _Salvage, report: RebuildReport) -> None:
    """Keeps the readable, whole history lines (those the head commits, when the head reads)."""
    path = model_dir / HISTORY_FILE
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        report.damaged.append(f"{path}: cannot be read ({err.strerror or err})")
        return
    if salvage.committed is not None:
        data = data[: salvage.committed]
    whole = data[: data.rfind(b"\n") + 1]
    report.history_dropped += len(data) > len(whole)  # a torn last line
    for number, line in enumerate(whole.splitlines(), start=1):
        if not line.strip():
            continue
        event, problem = history_event(line)
        if problem:
            report.history_dropped += 1
            report.damaged.append(f"{path}: line {number} {problem}")
        else:
            salvage.history.append(event)


def _entries(model_dir: Path, salvage: _Salvage, report: RebuildReport) -> dict[int, dict]:
    """Returns the new entries: one per complete version dir on disk, plus the old ones of gone dirs."""
    on_disk = sorted(int(name) for name in os.listdir(model_dir) if is_version_name(name))
    entries: dict[int, dict] = {}
    for version in on_disk:
        version_dir = model_dir / str(version)
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


def _labels(salvage: _Salvage, report: RebuildReport) -> dict[str, int]:
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


def _back_up(model_dir: Path) -> str | None:
    """Copies the old registry files into .manifest/before-rebuild-<time>/; returns that dir (None: none)."""
    sources = [model_dir / MANIFEST_FILE, model_dir / HISTORY_FILE, model_dir / VERSIONS_DIR]
    if not any(os.path.lexists(p) for p in sources):
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    backup = model_dir / RECORDS_DIR / f"{BACKUP_PREFIX}{stamp}"
    backup.mkdir(parents=True)
    for source in sources:
        if source.is_dir():
            shutil.copytree(source, backup / source.name, symlinks=True)
        elif os.path.lexists(source):
            shutil.copy2(source, backup / source.name, follow_symlinks=False)
    return str(backup)


def _write(model_dir: Path, head: dict, entries: dict[int, dict], labels: dict, history: list[dict]) -> None:
    """Writes the entries, the history, then the head (which commits them), each atomically.

    Whatever stands where a registry file or dir belongs, and unreadable entries, were backed up
    first (`_back_up`) and are removed here.
    """
    staging = _staging_dir(model_dir)
    for path in (model_dir / MANIFEST_FILE, model_dir / HISTORY_FILE):
        _clear_way(path, keep_file=True)
    _clear_way(model_dir / RECORDS_DIR, keep_file=False)
    _clear_way(model_dir / VERSIONS_DIR, keep_file=False)
    versions_dir = _make_dir(model_dir / VERSIONS_DIR)
    for name in os.listdir(versions_dir):
        stem = name.removesuffix(".json")
        if name.endswith(".json") and is_version_name(stem) and int(stem) not in entries:
            _clear_way(versions_dir / name, keep_file=False)
    for version, entry in entries.items():
        _clear_way(versions_dir / f"{version}.json", keep_file=True)
        write_text_atomic(
            versions_dir / f"{version}.json", _dumps_entry(entry), tmp_dir=staging, sync_dir=False
        )
    fsync_path(versions_dir)
    text = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in history)
    write_text_atomic(model_dir / HISTORY_FILE, text, tmp_dir=staging)
    published = [v for v, e in entries.items() if e["status"] == "published"]
    cap = max(1, int(head["serving"].get("num_latest", 1)))
    head = {**head, "labels": labels, "newest": published[-cap:], "history_bytes": len(text.encode())}
    write_text_atomic(model_dir / MANIFEST_FILE, _dumps_head(head), tmp_dir=staging)


def _clear_way(path: Path, *, keep_file: bool) -> None:
    """Removes what stands at `path`: anything but a regular file with `keep_file`, else a non-dir.

    A registry file's place must hold a file (or nothing), a registry dir's place a dir.
    """
    if not os.path.lexists(path):
        return
    if keep_file and path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif keep_file and not path.is_file():
        path.unlink()
    elif not keep_file and not path.is_dir():  # a symlink to a dir is kept
        path.unlink()
