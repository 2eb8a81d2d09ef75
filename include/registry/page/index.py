"""What the Models page shows of a model's versions, kept in memory in step with the registry.

A model page lists and charts every version, but each version's entry is a file of its own
(include/registry/store.py) and parsing 10,000 of them takes seconds. A `ModelIndex` reads each entry
once through `read_entry`, keeps the few fields the pages show, and on every later look re-reads
only the entries whose files changed: one stat of the versions dir says whether any did, a scan
of their stats says which. The history is append-only below the head's `history_bytes`, so it is
read on from where the last look stopped. A single-file manifest of before is read whole. The
version dirs on disk are listed again only when the model dir changed (its stat), so a published
version whose dir was deleted by hand shows as `missing`. Every file is found and parsed through
include/registry/store.py.

Read-only: it never takes the model dir's lock, and what it shows is at most one look behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from include.registry.checks import checks_verdict
from include.registry.store import (
    MISSING,
    SINGLE_FILE_FORMAT,
    entries_stamp,
    entry_stamps,
    read_entry,
    read_head,
    read_history_from,
    read_manifest,
    version_dirs,
)
from include.storage.paths import as_path, is_remote

#: History events the pages show: label moves and the approvals that decided them.
SHOWN_EVENTS = ("label", "approval")
#: A directory changed within this many seconds may change again within the same mtime tick:
#: its stat is not trusted to say "unchanged" until it has settled (git's "racy" rule).
SETTLE_SECONDS = 2
#: Models kept in memory by `model_index`.
MAX_INDEXES = 32

_INDEXES: OrderedDict[str, ModelIndex] = OrderedDict()
_INDEXES_LOCK = threading.Lock()


def version_summary(entry: dict) -> dict:
    """Returns the fields of a version's entry that the model page lists and charts."""
    metrics = entry.get("metrics") or {}
    return {
        "version": int(entry["version"]),
        "status": entry.get("status"),
        "logical_date": entry.get("logical_date"),
        "run_type": entry.get("run_type"),
        "dag_id": entry.get("dag_id"),
        "run_id": entry.get("run_id"),
        "published_at": entry.get("published_at"),
        "verdict": checks_verdict(entry),  # the worse of the two below
        "data_checks": _verdict(entry.get("data_checks")),
        "quality_gate": _verdict(entry.get("quality_gate")),
        "metrics": {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)},
    }


def _verdict(check: object) -> str | None:
    return check.get("verdict") if isinstance(check, dict) else None


class ModelIndex:
    """The summaries of one model's versions, its head and its shown history, refreshed on demand."""

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        self.model_dir = as_path(model_dir)
        self.head: dict = {}
        self._summaries: dict[int, dict] = {}
        self._stamps: dict[int, tuple[int, int, int]] = {}
        self._dir_stamp: tuple[int, int] | None = None
        self._history: list[dict] = []
        self._history_at: tuple[int, int] = (0, 0)  # (inode, bytes read) of the history file
        self._on_disk: set[int] = set()
        self._disk_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> ModelIndex:
        """Returns self after catching up with the registry's files (re-reads only what changed)."""
        with self._lock:
            self.head = read_head(self.model_dir)
            if self.head["format"] == SINGLE_FILE_FORMAT:
                self._read_whole()
            else:
                self._refresh_entries()
                self._refresh_history(self.head["history_bytes"])
            self._refresh_on_disk()
        return self

    def versions(self) -> list[dict]:
        """Returns the summaries of every version with an entry, newest first (`missing`: dir gone)."""
        with self._lock:
            return [
                s if s["status"] != "published" or v in self._on_disk else {**s, "status": MISSING}
                for v, s in sorted(self._summaries.items(), reverse=True)
            ]

    def missing(self) -> set[int]:
        """Returns the published versions whose dirs are not on disk."""
        with self._lock:
            return {v for v, s in self._summaries.items() if s["status"] == "published"} - self._on_disk

    def history(self) -> list[dict]:
        """Returns the label moves and approvals, newest first."""
        with self._lock:
            return self._history[::-1]

    def _read_whole(self) -> None:
        """Reads a single-file manifest of before (or none) whole: it is small by construction."""
        manifest = read_manifest(self.model_dir)
        self._summaries = {int(v): version_summary(e) for v, e in manifest["versions"].items()}
        self._stamps, self._dir_stamp = {}, None
        self._history = [e for e in manifest["history"] if e.get("event") in SHOWN_EVENTS]
        self._history_at = (0, 0)

    def _refresh_entries(self) -> None:
        """Re-reads the entries whose files changed since the last look, drops those that went."""
        stamp = entries_stamp(self.model_dir)  # before the scan: a write during it changes the next stamp
        if stamp is not None and stamp == self._dir_stamp:
            return
        seen = entry_stamps(self.model_dir)
        for version in self._summaries.keys() - seen.keys():
            self._summaries.pop(version)
            self._stamps.pop(version, None)
        for version, file_stamp in seen.items():
            if self._stamps.get(version) == file_stamp:
                continue
            entry = read_entry(self.model_dir, version)
            if entry is not None:
                self._summaries[version] = version_summary({"version": version, **entry})
                self._stamps[version] = file_stamp
        self._dir_stamp = _settled(stamp)

    def _refresh_on_disk(self) -> None:
        """Lists the version dirs again if the model dir changed since the last look."""
        stamp = _dir_stamp(self.model_dir)
        if stamp is None or stamp != self._disk_stamp:
            self._on_disk = set(version_dirs(self.model_dir))
            self._disk_stamp = _settled(stamp)

    def _refresh_history(self, committed: int) -> None:
        """Parses the history lines committed since the last look (from the start if it was rewritten)."""
        events, self._history_at, restarted = read_history_from(self.model_dir, self._history_at, committed)
        if restarted:
            self._history = []
        self._history += [e for e in events if e.get("event") in SHOWN_EVENTS]


def model_index(model_dir: str | os.PathLike[str]) -> ModelIndex:
    """Returns the model's index, refreshed (kept in memory for the next look)."""
    key = str(model_dir) if is_remote(model_dir) else str(Path(model_dir).resolve())
    with _INDEXES_LOCK:
        index = _INDEXES.pop(key, None) or ModelIndex(key)
        _INDEXES[key] = index
        while len(_INDEXES) > MAX_INDEXES:
            _INDEXES.popitem(last=False)
    return index.refresh()


def _dir_stamp(directory: Path) -> tuple[int, int] | None:
    """Returns (mtime_ns, inode) of a directory: it changes whenever an entry is renamed into it."""
    try:
        found = directory.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_mtime_ns, found.st_ino


def _settled(stamp: tuple[int, int] | None) -> tuple[int, int] | None:
    """Returns a dir's stamp if it is old enough to trust as "unchanged" next time, else None."""
    return stamp if stamp and time.time_ns() - stamp[0] > SETTLE_SECONDS * 10**9 else None
