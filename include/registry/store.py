"""The registry's on-disk format: a model's manifest (head, entries, history), read and changed.

This module is the one place that knows the registry's files; everything else goes through
its API: readers (`read_manifest`, `read_head`, `read_entry`, `read_version_entry`), listings
(`version_dirs`, `entry_versions`, `model_dirs`), where a version's dir is (`version_path`),
`manifest_update` for changes, the config snapshots (`archive_config`), what a path is
(`model_dir_problem`, `serving_root_problem`), and, for include/registry/rebuild.py, reading what
is left of a damaged registry (`salvage_registry`) and writing a whole one (`replace_registry`).

Each model dir keeps its registry beside the versions, under non-numeric names (TF Serving
ignores them):

    manifest.json                  the head: model, serving policy, labels, the newest published
                                   versions, how much of the history is committed, and the move
                                   requests waiting for an approval (`pending`, see approvals.py)
    .manifest/versions/<v>.json    one entry per version: lineage, content digest, status
    .manifest/history.jsonl        label moves and deletions, one JSON object a line, appended
    .staging/                      what a crash can leave behind: copies on their way in, versions
                                   on their way out, temp files; emptied by the next publisher
    .configs/<sha256>.yaml         the pipeline configs the versions were built from, written once
    .statistics/<sha256>.json      each version's data statistics and check report, written once
    .blocked/<time>-<run>.json     the reports of the last runs the checks blocked (none published)
    <version>/                     the version dirs themselves, as TF Serving loads them

and each serving root holds its model dirs and TF Serving's `models.config`
(include/registry/serving_config.py writes and reads it).

A version whose entry says published but whose dir is gone (deleted by hand) reads as `missing`
where people look (`shown_status`): its entry and labels are kept, since restoring the dir brings
it back, but models.config leaves it out.

`read_manifest` assembles them into the dict of before, when it was one file:

    {"model": "digits",
     "serving": {"version_policy": "latest", "num_latest": 2},
     "labels": {"stable": 20261012000000, "canary": 20261126000000},
     "versions": {"20261012000000": {...lineage..., "status": "published"}, ...},
     "history": [{"event": "label", "label": "stable", "version": ..., "by": ..., "reason": ...}, ...]}

A publish touches one entry, a line or two of history and the small head, so it costs the same
beside 10,000 versions as beside one (docs/performance.md). Every change is made under the model
dir's lock (`ManifestUpdate`): entries are replaced atomically (include/durable.py), history lines
are appended, then the head is replaced, which commits the labels and the history lines together;
history bytes past the head's `history_bytes` (a crashed writer's) are ignored by readers and cut
by the next writer. Readers see each file old or new, never torn, and concurrent publishers lose
nothing. A single-file manifest of before is read as it is and migrated by the first change.

Every file is checked as it is read: an empty, truncated or hand-edited one (not JSON, wrong
types, missing keys, an entry naming another version, a garbage history line) raises
ManifestError naming the file and the problem; include/registry/rebuild.py rebuilds the registry
from the version dirs on disk.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from include.durable import append_bytes, fsync_path, locked, write_text_atomic
from include.errors import ManifestError, RegistryError
from include.savedmodel.files import SAVED_MODEL_PB, missing_parts
from include.storage import objects
from include.storage.paths import as_path, is_remote, lexists, uri_of
from include.versions import is_version_name, parse_version, version_dir

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
#: The per-version entries and the history, beside the head.
RECORDS_DIR = ".manifest"
VERSIONS_DIR = f"{RECORDS_DIR}/versions"
HISTORY_FILE = f"{RECORDS_DIR}/history.jsonl"
#: Each version's data statistics and check report, content-addressed like the configs.
STATISTICS_DIR = ".statistics"
#: The reports of runs the data checks or the quality gate blocked: nothing was published.
BLOCKED_DIR = ".blocked"
#: Blocked reports the page and `blocked_runs` show; older ones are deleted by `record_blocked`.
KEEP_BLOCKED = 50
#: Where writers of a model dir put what is not in place yet (staging copies, temp files) or on
#: its way out (versions being deleted): one small dir to empty after a crash, never a listing of
#: the model dir with its thousands of versions.
STAGING_DIR = ".staging"
#: Config snapshots, content-addressed: `.configs/<sha256>.yaml`.
CONFIGS_DIR = ".configs"
#: Where rebuild keeps the registry files it replaced: `.manifest/before-rebuild-<UTC time>/`.
BACKUP_PREFIX = "before-rebuild-"
#: TF Serving's config of a whole serving root, beside its model dirs.
MODELS_CONFIG_FILE = "models.config"
#: Layout of the head; a manifest.json without `format` is the single file of before, which
#: `read_head` reports as format 1.
FORMAT = 2
SINGLE_FILE_FORMAT = 1
LABELS = ("stable", "canary")
#: The status shown for a published version whose dir is not on disk (never written to an entry).
MISSING = "missing"

#: Leftovers of crashed writers of the single-file layout, in the model dir itself.
_OLD_LEFTOVERS = (".staging-", ".deleting-", f".{MANIFEST_FILE}.")


def now_iso() -> str:
    """Returns the current UTC time as ISO 8601 (registry timestamps only, never versions)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_manifest(model_dir: str | os.PathLike[str]) -> dict:
    """Returns a model's whole manifest, assembled from its files (an empty one if none was written).

    Reads every entry: for the CLI, the UI and baselines, not for publishing.
    """
    model_dir = as_path(model_dir)
    head = _read_head_file(model_dir)
    if head is not None and "format" not in head:  # the single file of before, not migrated yet
        manifest = dict(head)
        manifest.setdefault("versions", {})
        manifest.setdefault("history", [])
    else:
        # The head first: anything it names (labels, history bytes) was written before it.
        head = _checked_head(head, model_dir)
        manifest = {
            "versions": _read_entries(model_dir),
            "history": _read_history(model_dir / HISTORY_FILE, head["history_bytes"], model_dir),
        }
        manifest.update((key, head[key]) for key in ("model", "serving", "labels"))
    manifest.setdefault("model", model_dir.name)
    manifest.setdefault("serving", {})
    manifest.setdefault("labels", {})
    return manifest


def read_head(model_dir: str | os.PathLike[str]) -> dict:
    """Returns the manifest's head: model, serving policy, labels, `newest` published versions.

    Cheap whatever the number of versions. A single-file manifest of before, not migrated yet,
    is summarized from its versions (then `newest` lists every published version, and `format`
    is SINGLE_FILE_FORMAT).
    """
    model_dir = as_path(model_dir)
    head = _read_head_file(model_dir)
    if head is not None and "format" not in head:
        return {
            **_new_head(model_dir),
            "format": SINGLE_FILE_FORMAT,
            **{k: head[k] for k in ("model", "serving", "labels") if k in head},
            "newest": published_versions({"versions": {}, **head}),
        }
    return _checked_head(head, model_dir)


def read_entry(model_dir: str | os.PathLike[str], version: int) -> dict | None:
    """Returns one version's entry (None if it has none in the current layout).

    Raises ManifestError if the entry file is damaged (not JSON, wrong types, another version's).
    """
    model_dir = as_path(model_dir)
    path = model_dir / VERSIONS_DIR / f"{int(version)}.json"
    entry = _read_json(path, model_dir)
    if entry is not None:
        _refuse_problems(path, model_dir, entry_problems(entry, int(version)))
    return entry


def read_version_entry(model_dir: str | os.PathLike[str], version: int) -> dict | None:
    """Returns a version's entry in either layout (a single-file manifest of before is read whole)."""
    entry = read_entry(model_dir, version)
    if entry is None and (as_path(model_dir) / MANIFEST_FILE).is_file():
        entry = read_manifest(model_dir)["versions"].get(str(int(version)))
    return entry


def is_published(model_dir: str | os.PathLike[str], version: int) -> bool:
    """Returns whether a version's entry says it is published (one small read)."""
    return (read_entry(model_dir, version) or {}).get("status") == "published"


# --- what is on disk: version dirs, model dirs, entry files -------------------------------------


def version_dirs(model_dir: str | os.PathLike[str]) -> list[int]:
    """Returns the versions whose dirs are in the model dir (names TF Serving loads), oldest first."""
    if is_remote(model_dir):  # a numeric prefix with objects under it
        return sorted(int(name) for name in objects.children(uri_of(model_dir)) if is_version_name(name))
    try:
        with os.scandir(model_dir) as items:
            return sorted(int(e.name) for e in items if is_version_name(e.name) and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def version_path(model_dir: str | os.PathLike[str], version: int) -> Path:
    """Returns where a version's dir is (or would be) in a model dir, named as TF Serving loads it."""
    model_dir = as_path(model_dir)
    if is_remote(model_dir):
        return model_dir / str(parse_version(version))
    return version_dir(model_dir.parent, model_dir.name, version)


def has_version_dir(model_dir: str | os.PathLike[str], version: int) -> bool:
    """Returns whether a version's dir is in the model dir."""
    return version_path(model_dir, version).is_dir()


def version_problems(version_dir: str | os.PathLike[str]) -> list[str]:
    """Returns what keeps a version dir from being served (empty if it is complete).

    In a bucket a version's `saved_model.pb` is written last, once every other object of it was
    verified (include/registry/publish.py): its presence is the version's completeness.
    """
    path = as_path(version_dir)
    if is_remote(path):
        if (path / SAVED_MODEL_PB).exists():
            return []
        return [f"no {SAVED_MODEL_PB} in {path} (an upload that did not finish, or a deleted version)"]
    return missing_parts(path)


def shown_status(status: str | None, on_disk: bool) -> str | None:
    """Returns a version's status as people read it: `missing` for a published one whose dir is gone."""
    return MISSING if status == "published" and not on_disk else status


def renamed_between(model_dir: str | os.PathLike[str]) -> list[Path]:
    """Returns the model dir and the registry dirs its writers rename files between, model dir first.

    Renames work within one file system only: include/run/preflight.py checks these share one.
    """
    model_dir = as_path(model_dir)
    return [model_dir, model_dir / STAGING_DIR, model_dir / VERSIONS_DIR]


def has_registry(path: str | os.PathLike[str]) -> bool:
    """Returns whether a dir holds registry files (manifest.json or .manifest/)."""
    path = as_path(path)
    return lexists(path / MANIFEST_FILE) or lexists(path / RECORDS_DIR)


def model_dirs(serving_root: str | os.PathLike[str]) -> list[Path]:
    """Returns the model dirs under a serving root that have a manifest.json, sorted by name."""
    if is_remote(serving_root):
        root = as_path(serving_root)
        names = [n for n in objects.children(uri_of(serving_root)) if not n.startswith(".")]
        return [root / n for n in names if (root / n / MANIFEST_FILE).is_file()]
    try:
        with os.scandir(serving_root) as items:
            found = [Path(e.path) for e in items if e.is_dir() and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in found if (p / MANIFEST_FILE).is_file())


def model_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Returns why `path` is no model dir (None if it is one): what it is instead, in words.

    A model dir holds a registry (manifest.json, .manifest/) or version dirs, and is neither a
    version dir nor a serving root.
    """
    path = as_path(path)
    if is_remote(path):  # a prefix: never a file or a symlink
        return _remote_dir_problem(path)
    if not os.path.lexists(path):
        return "does not exist"
    if not path.is_dir():
        return "is a broken symlink" if path.is_symlink() else "is a file, not a directory"
    if is_version_name(path.name) or os.path.lexists(path / SAVED_MODEL_PB):
        return f"is a version dir (a SavedModel); its model dir is {path.parent}"
    if has_registry(path) or version_dirs(path):
        return None
    models = [p.name for p in model_dirs(path)]
    if models or os.path.lexists(path / MODELS_CONFIG_FILE):
        return f"is a serving root (model dirs in it: {', '.join(models) or 'none'}); name one model dir"
    return "holds no registry (manifest.json, .manifest/) and no version dirs"


def _remote_dir_problem(path) -> str | None:
    """`model_dir_problem` of a bucket prefix."""
    if is_version_name(path.name) or (path / SAVED_MODEL_PB).exists():
        return f"is a version dir (a SavedModel); its model dir is {path.parent}"
    if has_registry(path) or version_dirs(path):
        return None
    models = [p.name for p in model_dirs(path)]
    if models or (path / MODELS_CONFIG_FILE).exists():
        return f"is a serving root (model dirs in it: {', '.join(models) or 'none'}); name one model dir"
    return "holds no registry (manifest.json, .manifest/) and no version dirs"


def serving_root_problem(path: str | os.PathLike[str]) -> str | None:
    """Returns why `path` cannot be a serving root (None if it is one or can be created as one)."""
    path = as_path(path)
    if is_remote(path):
        if is_version_name(path.name) or (path / SAVED_MODEL_PB).exists():
            return f"is a version dir (a SavedModel); its serving root is {path.parent.parent}"
        if has_registry(path) or version_dirs(path):
            return f"is a model dir (it holds a registry or version dirs); its serving root is {path.parent}"
        return None
    current = path
    while not os.path.lexists(current) and current.parent != current:
        current = current.parent
    if not current.is_dir():
        kind = "a broken symlink" if current.is_symlink() else "a file, not a directory"
        return f"is {kind}" if current == path else f"cannot be created: {current} is {kind}"
    if current != path:
        return None
    if is_version_name(path.name) or os.path.lexists(path / SAVED_MODEL_PB):
        return f"is a version dir (a SavedModel); its serving root is {path.parent.parent}"
    if has_registry(path) or version_dirs(path):
        return f"is a model dir (it holds a registry or version dirs); its serving root is {path.parent}"
    return None


def entry_versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """Returns the versions that have an entry file, oldest first."""
    return sorted(entry_stamps(model_dir))


def entries_stamp(model_dir: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Returns (mtime_ns, inode) of the entries' dir: it changes whenever an entry is renamed into it.

    In a bucket: the number of entries and a hash of their listing (names, sizes, tokens).
    """
    if is_remote(model_dir):
        stamps = entry_stamps(model_dir)
        return (len(stamps), hash(tuple(sorted(stamps.items())))) if stamps else None
    try:
        found = (Path(model_dir) / VERSIONS_DIR).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_mtime_ns, found.st_ino


def entry_stamps(model_dir: str | os.PathLike[str]) -> dict[int, tuple[int, int, int]]:
    """Returns {version: (mtime_ns, size, inode)} of the entry files (each is replaced, never edited)."""
    stamps = {}
    if is_remote(model_dir):
        for found in objects.listing(uri_of(model_dir) / VERSIONS_DIR):
            stem = found.uri.name.removesuffix(".json")
            if found.uri.name.endswith(".json") and is_version_name(stem):
                stamps[int(stem)] = (0, found.size, hash(found.token))
        return stamps
    try:
        with os.scandir(Path(model_dir) / VERSIONS_DIR) as items:
            for item in items:
                stem = item.name.removesuffix(".json")
                if item.name.endswith(".json") and is_version_name(stem):
                    found = item.stat()
                    stamps[int(stem)] = (found.st_mtime_ns, found.st_size, found.st_ino)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return stamps


def read_history_from(
    model_dir: str | os.PathLike[str], position: tuple[int, int], committed: int
) -> tuple[list[dict], tuple[int, int], bool]:
    """Returns (events, new position, started over) of the committed history lines past `position`.

    `position` is (inode, bytes read) from the last call, (0, 0) at first; a history file that
    was replaced (a rebuild) or cut is read from its start again. Raises ManifestError for a
    line that is not a JSON event.
    """
    path = as_path(model_dir) / HISTORY_FILE
    if is_remote(path):  # no inode, and an append rewrites the object: read the committed lines again
        found = objects.read_bytes(uri_of(path))
        if found is None:
            return [], (0, 0), position != (0, 0)
        events = _history_events(found[:committed], path, as_path(model_dir))
        return events, (0, committed), True
    try:
        with open(path, "rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            restarted = (inode, min(committed, position[1])) != position
            start = 0 if restarted else position[1]
            handle.seek(start)
            data = handle.read(max(0, committed - start))
    except FileNotFoundError:
        return [], (0, 0), position != (0, 0)
    whole = data[: data.rfind(b"\n") + 1]
    events, offset = [], start
    for line in whole.splitlines(keepends=True):
        if line.strip():
            event, problem = history_event(line)
            if problem:
                raise ManifestError(path, f"line at byte {offset} {problem}", model_dir)
            events.append(event)
        offset += len(line)
    return events, (inode, start + len(whole)), restarted


def archive_config(model_dir: str | os.PathLike[str], sha256: str, data: bytes) -> Path:
    """Returns `.configs/<sha256>.yaml` of a model dir, written once, atomically, under its lock."""
    if len(sha256) != 64 or not set(sha256) <= set(string.hexdigits.lower()):
        raise RegistryError(f"config sha256: expected 64 lowercase hex digits, got {sha256!r}")
    model_dir = as_path(model_dir)
    target = model_dir / CONFIGS_DIR / f"{sha256}.yaml"
    if target.is_file():  # content-addressed: once there, it is the right one
        return target
    with locked(model_dir):
        if not target.is_file():
            _make_dir(target.parent)
            write_text_atomic(target, data, tmp_dir=_staging_dir(model_dir))
    return target


def archive_statistics(model_dir: str | os.PathLike[str], statistics: dict) -> dict:
    """Returns the entry's reference to a version's statistics, written once under the model dir's lock.

    Content-addressed (`.statistics/<sha256>.json`), so a rerun of the same data writes nothing
    and entries never share a file that changes.
    """
    data = json.dumps(statistics, sort_keys=True, separators=(",", ":")).encode()
    sha256 = hashlib.sha256(data).hexdigest()
    model_dir = as_path(model_dir)
    target = model_dir / STATISTICS_DIR / f"{sha256}.json"
    if not target.is_file():
        with locked(model_dir):
            if not target.is_file():
                _make_dir(target.parent)
                write_text_atomic(target, data, tmp_dir=_staging_dir(model_dir))
    return {"sha256": sha256, "path": f"{STATISTICS_DIR}/{sha256}.json"}


def read_statistics(model_dir: str | os.PathLike[str], entry: dict | None) -> dict | None:
    """Returns the statistics a version's entry references (None when it has none or they are gone).

    A file whose bytes are not the digest its entry names (hand-edited, torn) raises ManifestError.
    """
    reference = (entry or {}).get("statistics")
    if not isinstance(reference, dict) or not isinstance(reference.get("sha256"), str):
        return None
    model_dir = as_path(model_dir)
    path = model_dir / STATISTICS_DIR / f"{reference['sha256']}.json"
    try:
        data = _read_whole(path)
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != reference["sha256"]:
        raise ManifestError(path, "its content is not the sha256 its name and entry give", model_dir)
    return _parse_json(data, path, model_dir)


def record_blocked(model_dir: str | os.PathLike[str], report: dict) -> Path:
    """Returns where a blocked run's report was written (`.blocked/<time>-<run>.json`), atomically.

    `report` names the run (`run_id`) and holds what the checks found; the oldest reports beyond
    KEEP_BLOCKED are deleted. A rerun of the same run's step replaces its own report.
    """
    model_dir = as_path(model_dir)
    run = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(report.get("run_id") or "run"))[:120]
    step = re.sub(r"[^a-z_]+", "_", str(report.get("step") or "step"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with locked(model_dir):
        directory = _make_dir(model_dir / BLOCKED_DIR)
        for old in _blocked_files(model_dir):
            if old.name.split("-", 1)[-1] == f"{run}-{step}.json":
                old.unlink()
        target = directory / f"{stamp}-{run}-{step}.json"
        write_text_atomic(
            target, json.dumps({**report, "blocked_at": now_iso()}, indent=1), tmp_dir=_staging_dir(model_dir)
        )
        for old in _blocked_files(model_dir)[:-KEEP_BLOCKED]:
            old.unlink()
    return target


def blocked_runs(model_dir: str | os.PathLike[str], limit: int = 20) -> list[dict]:
    """Returns the newest `limit` blocked runs' reports of a model dir, newest first.

    A report that cannot be read as JSON is skipped with a warning (it is informational).
    """
    model_dir = as_path(model_dir)
    reports = []
    for path in reversed(_blocked_files(model_dir)[-limit:] if limit else []):
        try:
            reports.append(json.loads(_read_whole(path)))
        except (OSError, ValueError) as err:
            log.warning("skipping blocked report %s: %s", path, err)
    return reports


def _blocked_files(model_dir: Path) -> list[Path]:
    """Returns the blocked reports of a model dir, oldest first (their names start with the time)."""
    directory = model_dir / BLOCKED_DIR
    if not is_remote(directory) and not directory.is_dir():
        return []
    try:
        return sorted((p for p in directory.iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):  # a bucket prefix with no object is no directory
        return []


class ManifestUpdate:
    """One change of a model's manifest, made while holding the model dir's lock.

    Reads only what it touches (the head, the entries asked for); `commit` writes the changed
    entries, appends the new history lines, then replaces the head, which commits them. Opening
    one migrates a single-file manifest of before and cuts history bytes no head committed.
    """

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        self.model_dir = as_path(model_dir)
        self._entries: dict[int, dict | None] = {}  # read or changed, by version
        self._changed: set[int] = set()
        self._events: list[dict] = []
        self._doomed: set[int] = set()  # version dirs to remove once the change is committed
        self._newest_stale = False
        self._tokens: dict[str, str | None] = {}  # in a bucket: entries' tokens as read, by file name
        # In a bucket: the head object's token as read, so that its replacement is conditional.
        self._head_token = _head_token(self.model_dir)
        self.head = self._open()
        self._written_head = _dumps_head(self.head)
        if is_remote(self.model_dir):  # the history as this change found it (its uncommitted tail cut)
            found = objects.stat(uri_of(self.model_dir / HISTORY_FILE))
            self._tokens[HISTORY_FILE] = found.token if found else None

    @property
    def model(self) -> str:
        """Returns the model's name."""
        return self.head["model"]

    @property
    def labels(self) -> dict:
        """Returns the labels (label -> version), to read or change."""
        return self.head["labels"]

    @property
    def pending(self) -> list[dict]:
        """Returns the move requests waiting for an approval (oldest first), to read or change."""
        return self.head.setdefault("pending", [])

    def history(self) -> list[dict]:
        """Returns the committed history events, oldest first, as this change found them."""
        return read_history_from(self.model_dir, (0, 0), self.head["history_bytes"])[0]

    def entry(self, version: int) -> dict | None:
        """Returns a version's entry as this change has it (None if it has none)."""
        if version not in self._entries:
            if is_remote(self.model_dir):  # with its token: the entry is replaced only as read
                path = self.model_dir / VERSIONS_DIR / f"{int(version)}.json"
                found = objects.read(uri_of(path))
                self._tokens[path.name] = found[1] if found else None
                entry = _parse_json(found[0], path, self.model_dir) if found else None
                if entry is not None:
                    _refuse_problems(path, self.model_dir, entry_problems(entry, int(version)))
                self._entries[version] = entry
            else:
                self._entries[version] = read_entry(self.model_dir, version)
        return self._entries[version]

    def is_published(self, version: int | None) -> bool:
        """Returns whether `version` is published, as this change has it."""
        return version is not None and (self.entry(version) or {}).get("status") == "published"

    def put_entry(self, version: int, entry: dict) -> None:
        """Sets a version's entry (written on commit) and keeps `newest` in step with its status."""
        self._entries[version] = entry
        self._changed.add(version)
        newest, cap = self.head["newest"], self._newest_cap()
        if entry.get("status") == "published":
            # Short of `cap`, `newest` holds every published version; full, the newest `cap`.
            if version not in newest and (len(newest) < cap or version > newest[0]):
                bisect.insort(newest, version)
                del newest[:-cap]
        elif version in newest:
            self._newest_stale |= len(newest) >= cap  # the next newest is unknown: look again
            newest.remove(version)

    def set_serving(self, policy: dict) -> None:
        """Sets the serving policy (TF Serving's version policy and num_latest)."""
        if policy == self.head["serving"]:
            return
        was_full = len(self.head["newest"]) >= self._newest_cap()
        self.head["serving"] = dict(policy)
        self._newest_stale |= was_full and len(self.head["newest"]) < self._newest_cap()
        del self.head["newest"][: -self._newest_cap()]

    def newest(self) -> list[int]:
        """Returns the newest published versions, oldest first (at least num_latest of them)."""
        if self._newest_stale:
            self.head["newest"] = self.published_on_disk()[-self._newest_cap() :]
            self._newest_stale = False
        return self.head["newest"]

    def published_on_disk(self) -> list[int]:
        """Returns the published versions whose dirs are on disk, oldest first."""
        return [v for v, status in self.versions_on_disk() if status == "published"]

    def versions_on_disk(self) -> list[tuple[int, str | None]]:
        """Returns the version dirs on disk with their entries' status, oldest first.

        Lists the model dir and reads the entries of its version dirs: retention keeps that short.
        """
        return [(v, (self.entry(v) or {}).get("status")) for v in version_dirs(self.model_dir)]

    def remove_after_commit(self, version: int) -> None:
        """Removes a version's dir once the change is committed (its entry says deleted by then)."""
        self._doomed.add(version)

    def record_event(self, event: dict, *, by: str, reason: str) -> None:
        """Adds one history event (label move, deletion) with when, who and why."""
        self._events.append({**event, "at": now_iso(), "by": by, "reason": reason})

    def commit(self) -> None:
        """Writes the changed entries, appends the history lines, then replaces the head."""
        self.newest()
        staging = _staging_dir(self.model_dir)
        if is_remote(self.model_dir):
            self._commit_remote_records()
        elif self._changed:
            versions_dir = _make_dir(self.model_dir / VERSIONS_DIR)
            for version in sorted(self._changed):
                text = _dumps_entry(self._entries[version])
                write_text_atomic(versions_dir / f"{version}.json", text, tmp_dir=staging, sync_dir=False)
            fsync_path(versions_dir)
        if self._events and not is_remote(self.model_dir):
            lines = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in self._events)
            self.head["history_bytes"] = append_bytes(self.model_dir / HISTORY_FILE, lines.encode())
        text = _dumps_head(self.head)
        if text != self._written_head:
            self._write_head(text, staging)
            self._written_head = text
        self._changed.clear()
        self._events.clear()
        # Recorded first, removed second: a crash in between leaves a dir whose entry says deleted,
        # which the next retention pass removes; never a published entry without its dir.
        for version in sorted(self._doomed):
            if is_remote(self.model_dir):  # saved_model.pb first: TF Serving stops seeing it at once
                objects.delete_tree(uri_of(version_path(self.model_dir, version)), first=[SAVED_MODEL_PB])
                continue
            doomed = staging / f"deleting-{version}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(version_path(self.model_dir, version), doomed)  # TF Serving sees it vanish at once
            shutil.rmtree(doomed, ignore_errors=True)
        self._doomed.clear()

    def _commit_remote_records(self) -> None:
        """Writes the changed entries and the history into a bucket, each conditionally.

        Every object is replaced only if it still is what this change read (or is still absent):
        a writer that lost its lease cannot overwrite what the lease's new holder committed. The
        history has no append: its committed bytes (the head's `history_bytes`) plus the new lines
        replace it.
        """
        for version in sorted(self._changed):
            path = self.model_dir / VERSIONS_DIR / f"{version}.json"
            if path.name not in self._tokens:
                found = objects.stat(uri_of(path))
                self._tokens[path.name] = found.token if found else None
            data = _dumps_entry(self._entries[version]).encode()
            self._tokens[path.name] = self._write_if_unchanged(path, data, self._tokens[path.name])
        if self._events:
            path = self.model_dir / HISTORY_FILE
            lines = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in self._events)
            found = objects.read(uri_of(path))
            committed = found[0][: self.head["history_bytes"]] if found else b""
            # Conditional on the history this change opened, not the one just read: bytes another
            # writer put there since would otherwise be dropped without a word.
            self._write_if_unchanged(path, committed + lines.encode(), self._tokens[HISTORY_FILE])
            self.head["history_bytes"] = len(committed) + len(lines.encode())

    def _write_if_unchanged(self, path: Path, data: bytes, token: str | None) -> str:
        """Writes one registry object if it still has `token` (None: if it is still absent)."""
        try:
            if token is None:
                return objects.write(uri_of(path), data, if_absent=True)
            return objects.write(uri_of(path), data, if_token=token)
        except objects.PreconditionFailed:
            raise RegistryError(
                f"{path} was changed by another writer during this change (its lease expired?): "
                "the head was not written, so nothing was committed; retry"
            ) from None

    def _write_head(self, text: str, staging: Path) -> None:
        """Replaces the head, which commits the change.

        In a bucket the write is conditional on the head this change read: a writer that lost
        its lease (paused past its expiry) cannot overwrite the head another writer committed.
        """
        path = self.model_dir / MANIFEST_FILE
        if not is_remote(path):
            write_text_atomic(path, text, tmp_dir=staging)
            return
        try:
            if self._head_token is None:
                self._head_token = objects.write(uri_of(path), text.encode(), if_absent=True)
            else:
                self._head_token = objects.write(uri_of(path), text.encode(), if_token=self._head_token)
        except objects.PreconditionFailed:
            raise RegistryError(
                f"{path} was changed by another writer during this change (its lease expired?): "
                "nothing was committed; retry"
            ) from None

    def _newest_cap(self) -> int:
        return max(1, int(self.head["serving"].get("num_latest", 1)))

    def _open(self) -> dict:
        """Returns the head to change: migrates the single file of before, cuts an uncommitted tail."""
        found = _read_head_file(self.model_dir)
        if found is None or "format" not in found:
            _remove_old_leftovers(self.model_dir)
        if found is not None and "format" not in found:
            return self._migrate(found)
        head = _checked_head(found, self.model_dir)
        if found is None and (self.model_dir / VERSIONS_DIR).is_dir():
            self._newest_stale = True  # entries of a first change that crashed before its head
        self._cut_uncommitted_history(head)
        return head

    def _cut_uncommitted_history(self, head: dict) -> None:
        """Drops history bytes past the head's `history_bytes`: lines of a writer that crashed."""
        path = self.model_dir / HISTORY_FILE
        if is_remote(path):
            found = objects.stat(uri_of(path))
            size = found.size if found else 0
        else:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
        committed = head["history_bytes"]
        if size < committed:  # lost bytes: keep the whole lines that are left
            log.warning("%s is shorter (%d bytes) than its head records (%d)", path, size, committed)
            committed = head["history_bytes"] = _read_whole(path).rfind(b"\n") + 1 if size else 0
        if size != committed:
            log.warning("dropping %d uncommitted bytes at the end of %s", size - committed, path)
            if is_remote(path):
                objects.write(uri_of(path), _read_whole(path)[:committed])
            else:
                os.truncate(path, committed)
                fsync_path(path)

    def _migrate(self, old: dict) -> dict:
        """Rewrites a single-file manifest in this layout; returns the head that commits it.

        Until the head replaces manifest.json, readers read the single file and a crash leaves it
        in charge: the next change migrates again from the start.
        """
        log.info("migrating %s to one file per version", self.model_dir / MANIFEST_FILE)
        staging = _staging_dir(self.model_dir)
        versions_dir = _make_dir(self.model_dir / VERSIONS_DIR)
        for key, entry in old.get("versions", {}).items():
            write_text_atomic(
                versions_dir / f"{int(key)}.json", _dumps_entry(entry), tmp_dir=staging, sync_dir=False
            )
        fsync_path(versions_dir)
        history = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in old.get("history", []))
        write_text_atomic(self.model_dir / HISTORY_FILE, history, tmp_dir=staging)
        head = {
            **_new_head(self.model_dir),
            **{k: old[k] for k in ("model", "serving", "labels") if k in old},
            "history_bytes": len(history.encode()),
        }
        self.head = head  # for _newest_cap
        head["newest"] = published_versions({"versions": {}, **old})[-self._newest_cap() :]
        write_text_atomic(self.model_dir / MANIFEST_FILE, _dumps_head(head), tmp_dir=staging)
        return head


@contextlib.contextmanager
def manifest_update(model_dir: str | os.PathLike[str]) -> Iterator[ManifestUpdate]:
    """Yields a change of the manifest and commits it when the block ends without an error.

    The caller holds the model dir's lock (include/durable.py `locked`).
    """
    update = ManifestUpdate(model_dir)
    yield update
    update.commit()


def migrate_manifest(model_dir: str | os.PathLike[str]) -> None:
    """Rewrites a single-file manifest of before in the current layout, under the lock (else no-op)."""
    with locked(as_path(model_dir)), manifest_update(model_dir):
        pass


def published_versions(manifest: dict) -> list[int]:
    """Returns the versions of a whole manifest currently published (not deleted), oldest first."""
    return sorted(int(v) for v, e in manifest["versions"].items() if e.get("status") == "published")


def _new_head(model_dir: Path) -> dict:
    return {
        "format": FORMAT,
        "model": model_dir.name,
        "serving": {},
        "labels": {},
        "newest": [],
        "history_bytes": 0,
    }


def _checked_head(head: dict | None, model_dir: Path) -> dict:
    """Returns a head of this layout (a new one for None); ManifestError for another layout or damage."""
    if head is None:
        return _new_head(model_dir)
    path = model_dir / MANIFEST_FILE
    if head.get("format") != FORMAT:
        raise ManifestError(path, f"expected manifest format {FORMAT}, got {head.get('format')!r}", model_dir)
    _refuse_problems(path, model_dir, head_problems(head))
    return head


def _dumps_head(head: dict) -> str:
    return json.dumps(head, indent=2, sort_keys=True) + "\n"


def _dumps_entry(entry: dict | None) -> str:
    return json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n"


def _read_json(path: Path, model_dir: Path) -> dict | None:
    """Returns the JSON object in a registry file (None if there is no such file).

    Raises ManifestError naming the file when it is empty, truncated, not JSON or not an object.
    """
    try:
        data = _read_whole(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ManifestError(path, f"cannot be read ({err.strerror or err})", model_dir) from None
    return _parse_json(data, path, model_dir)


def _read_whole(path: Path) -> bytes:
    """Returns a file's bytes; FileNotFoundError if there is none.

    A bucket object is read in one GET, never through a file object: one opened, then replaced
    by another writer, reads torn (GCS: the new bytes cut at the old size) or fails (S3).
    """
    if not is_remote(path):
        return path.read_bytes()
    found = objects.read_bytes(uri_of(path))
    if found is None:
        raise FileNotFoundError(str(path))
    return found


def _parse_json(data: bytes, path: Path, model_dir: Path) -> dict:
    """Returns the JSON object in a registry file's bytes; ManifestError naming the file if it is none."""
    if not data.strip():
        raise ManifestError(path, f"is empty ({len(data)} bytes), expected a JSON object", model_dir)
    try:
        value = json.loads(data)
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise ManifestError(path, f"is not valid JSON ({_json_problem(err, len(data))})", model_dir) from None
    if not isinstance(value, dict):
        raise ManifestError(path, f"expected a JSON object, got {_describe(value)}", model_dir)
    return value


def _json_problem(err: ValueError, size: int) -> str:
    """Returns where and why JSON parsing failed, hinting at truncation when it failed at the end."""
    if not isinstance(err, json.JSONDecodeError):
        return f"{err}"
    where = f"{err.msg} at line {err.lineno} column {err.colno}"
    return f"{where}, at the end of its {size} bytes: truncated?" if err.pos >= size - 1 else where


def _head_token(model_dir: Path) -> str | None:
    """Returns the token of a bucket's head object (None if there is none, or locally)."""
    if not is_remote(model_dir):
        return None
    found = objects.stat(uri_of(model_dir / MANIFEST_FILE))
    return found.token if found else None


def _read_head_file(model_dir: Path) -> dict | None:
    """Returns manifest.json checked for damage (None if missing): a head, or the single file of before.

    The head's fields are checked by `_checked_head`; the single file's here.
    """
    found = _read_json(model_dir / MANIFEST_FILE, model_dir)
    if found is not None and "format" not in found:
        _refuse_problems(model_dir / MANIFEST_FILE, model_dir, single_file_problems(found))
    return found


def _refuse_problems(path: Path, model_dir: Path, problems: list[str]) -> None:
    """Raises ManifestError naming the file and its problems, if there are any."""
    if problems:
        raise ManifestError(path, "; ".join(problems), model_dir)


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _describe(value: object) -> str:
    """Returns how a JSON value reads in an error message: its JSON type and (short) value."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    kind = "null" if value is None else kinds.get(type(value), "an object")
    text = json.dumps(value, default=str)
    return kind if value is None else f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"


def _is(value: object, kind: type) -> bool:
    """Returns whether a JSON value is of `kind` (a boolean is no integer here)."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _key_problems(record: dict, required: dict[str, type], optional: dict[str, type]) -> list[str]:
    """Returns the missing keys of a JSON object and those whose values have the wrong type."""
    problems = [f"missing key {key!r}" for key in required if key not in record]
    for key, kind in {**required, **optional}.items():
        if key in record and not _is(record[key], kind) and not (key in optional and record[key] is None):
            problems.append(f"{key}: expected {_KINDS[kind]}, got {_describe(record[key])}")
    return problems


def head_problems(head: dict) -> list[str]:
    """Returns what is wrong with a head's fields (empty list = nothing): keys, types, values."""
    problems = _key_problems(
        head,
        {"model": str, "serving": dict, "labels": dict, "newest": list, "history_bytes": int},
        {"pending": list},
    )
    if _is(head.get("history_bytes"), int) and head["history_bytes"] < 0:
        problems.append(f"history_bytes: expected a size >= 0, got {head['history_bytes']}")
    if isinstance(head.get("newest"), list):
        problems += [
            f"newest: expected versions, got {_describe(v)}" for v in head["newest"] if not _is(v, int)
        ]
    return problems + _labels_problems(head.get("labels")) + _serving_problems(head.get("serving"))


def _labels_problems(labels: object) -> list[str]:
    """Returns what is wrong with a labels object (label -> version number)."""
    if not isinstance(labels, dict):
        return []  # reported as a wrong type by the caller
    return [
        f"labels.{label}: expected a version number, got {_describe(version)}"
        for label, version in labels.items()
        if not (_is(version, int) or version is None)
    ]


def _serving_problems(serving: object) -> list[str]:
    """Returns what is wrong with a serving policy object (version_policy, num_latest)."""
    if not isinstance(serving, dict):
        return []
    problems = [
        f"serving.{p}" for p in _key_problems(serving, {}, {"version_policy": str, "num_latest": int})
    ]
    if _is(serving.get("num_latest"), int) and serving["num_latest"] < 1:
        problems.append(f"serving.num_latest: expected at least 1, got {serving['num_latest']}")
    return problems


#: Where an entry's fields are read (versions table, baselines, the UI): their types are checked.
_ENTRY_OPTIONAL = {
    "content_digest": str,
    "metrics": dict,
    "logical_date": str,
    "published_at": str,
    "run_type": str,
}
ENTRY_STATUSES = ("published", "deleted")


def entry_problems(entry: dict, version: int) -> list[str]:
    """Returns what is wrong with one version's entry (empty list = nothing), `version` from its name."""
    problems = _key_problems(entry, {"version": int, "status": str}, _ENTRY_OPTIONAL)
    if _is(entry.get("version"), int) and entry["version"] != version:
        problems.append(f"version: {entry['version']} disagrees with the entry's name {version}")
    if isinstance(entry.get("status"), str) and entry["status"] not in ENTRY_STATUSES:
        problems.append(f"status: expected one of {list(ENTRY_STATUSES)}, got {entry['status']!r}")
    return problems


def single_file_problems(manifest: dict) -> list[str]:
    """Returns what is wrong with a single-file manifest of before (versions and history inside it)."""
    problems = _key_problems(manifest, {}, {"model": str, "serving": dict, "labels": dict})
    problems += _labels_problems(manifest.get("labels")) + _serving_problems(manifest.get("serving"))
    versions, history = manifest.get("versions", {}), manifest.get("history", [])
    if not isinstance(versions, dict):
        problems.append(f"versions: expected an object, got {_describe(versions)}")
    else:
        for key, entry in versions.items():
            if not is_version_name(key):
                problems.append(f"versions.{key}: expected a version number as key")
            elif not isinstance(entry, dict):
                problems.append(f"versions.{key}: expected an object, got {_describe(entry)}")
            else:
                problems += [f"versions.{key}.{p}" for p in entry_problems(entry, int(key))]
    if not isinstance(history, list):
        problems.append(f"history: expected a list, got {_describe(history)}")
    else:
        problems += [
            f"history[{i}]: expected an object with an 'event', got {_describe(e)}"
            for i, e in enumerate(history)
            if not (isinstance(e, dict) and isinstance(e.get("event"), str))
        ]
    return problems


def _read_entries(model_dir: Path) -> dict[str, dict]:
    """Returns every version's entry, in numeric order of versions."""
    entries = {}
    for version in entry_versions(model_dir):
        entry = read_entry(model_dir, version)
        if entry is not None:
            entries[str(version)] = entry
    return entries


def _read_history(path: Path, committed: int, model_dir: Path) -> list[dict]:
    """Returns the committed history events: the first `committed` bytes, whole lines only.

    Raises ManifestError naming the file and the line if one is not a JSON event.
    """
    try:
        if is_remote(path):
            data = (objects.read_bytes(uri_of(path)) or b"")[:committed]
        else:
            with open(path, "rb") as handle:
                data = handle.read(committed)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ManifestError(path, f"cannot be read ({err.strerror or err})", model_dir) from None
    return _history_events(data, path, model_dir)


def _history_events(data: bytes, path: Path, model_dir: Path) -> list[dict]:
    """Returns the events of history bytes (whole lines only); ManifestError naming a bad line."""
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            event, problem = history_event(line)
            if problem:
                raise ManifestError(path, f"line {number} {problem}", model_dir)
            events.append(event)
    return events


def history_event(line: bytes) -> tuple[dict, str | None]:
    """Returns (event, None) for a good history line, else ({}, what is wrong with it)."""
    try:
        event = json.loads(line)
    except ValueError as err:
        return {}, f"is not valid JSON ({_json_problem(err, len(line))}): {line[:60]!r}"
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return {}, f"expected a JSON object with an 'event', got {_describe(event)}"
    return event, None


def staging_path(model_dir: str | os.PathLike[str], name: str) -> Path:
    """Returns where a writer stages `name`: inside the model dir's staging dir (the caller makes it)."""
    return as_path(model_dir) / STAGING_DIR / name


def clear_staging(model_dir: str | os.PathLike[str]) -> None:
    """Empties the staging dir of what crashed writers left; the caller holds the model dir's lock.

    Lists `.staging/` only, never the model dir with its versions. A bucket has none: its writers
    put objects in place directly, in an order that keeps them invisible until complete.
    """
    if is_remote(model_dir):
        return
    staging = Path(model_dir) / STAGING_DIR
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return
    for name in names:
        _remove_stale(staging / name)


def _remove_stale(path: Path) -> None:
    """Deletes a dir or file a crashed writer left (a publisher's copy, a temp file)."""
    log.warning("removing %s, left by a crashed publisher", path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _staging_dir(model_dir: Path) -> Path:
    """Returns the model dir's staging dir, made if missing."""
    return _make_dir(model_dir / STAGING_DIR)


def _make_dir(path: Path) -> Path:
    """Returns `path`, made (with its parents) and flushed into its parent if it was missing."""
    if is_remote(path):  # a prefix exists once an object is under it
        return path
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        fsync_path(path.parent)
    return path


def _remove_old_leftovers(model_dir: Path) -> None:
    """Deletes staging dirs and temp files that crashed writers of the single-file layout left."""
    if is_remote(model_dir) or not model_dir.is_dir():
        return
    with os.scandir(model_dir) as entries:
        names = [e.name for e in entries if e.name.startswith(_OLD_LEFTOVERS)]
    for name in names:
        if name.startswith(f".{MANIFEST_FILE}.") and not name.endswith(".tmp"):
            continue
        _remove_stale(model_dir / name)


# --- what include/registry/rebuild.py needs: read what is left, write a whole registry ----------


@dataclass
class Salvage:
    """What still reads of a (damaged) registry, and what does not."""

    model: str | None = None
    serving: dict | None = None  # None: unreadable or never set
    labels: dict | None = None  # None: the head's labels could not be read
    entries: dict[int, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    history_dropped: int = 0
    damaged: list[str] = field(default_factory=list)  # "<file>: <problem>", for the report


def salvage_registry(model_dir: str | os.PathLike[str]) -> Salvage:
    """Returns what still reads of a model's registry files, in either layout; raises nothing for damage."""
    model_dir = as_path(model_dir)
    salvage = Salvage()
    committed = _salvage_head(model_dir, salvage)
    _salvage_entries(model_dir, salvage)
    _salvage_history(model_dir, committed, salvage)
    return salvage


def _salvage_head(model_dir: Path, salvage: Salvage) -> int | None:
    """Keeps the head's model name, serving policy and labels, each if it reads; returns its history_bytes."""
    path = model_dir / MANIFEST_FILE
    try:
        found = _read_json(path, model_dir)
    except ManifestError as err:
        salvage.damaged.append(f"{path}: {err.problem}")
        return None
    if found is None:
        return None
    if isinstance(found.get("model"), str) and found["model"]:
        salvage.model = found["model"]
    serving = found.get("serving")
    if isinstance(serving, dict) and not _serving_problems(serving):
        salvage.serving = dict(serving)
    elif "serving" in found:
        salvage.damaged.append(f"{path}: serving policy unreadable, left to the next publish")
    if isinstance(found.get("labels"), dict):
        salvage.labels = found["labels"]
    if "format" not in found:  # the single file of before: entries and history inside
        _salvage_single_file(path, found, salvage)
    elif isinstance(found.get("history_bytes"), int) and found["history_bytes"] >= 0:
        return found["history_bytes"]
    return None


def _salvage_single_file(path: Path, found: dict, salvage: Salvage) -> None:
    """Keeps the readable entries and history events of a single-file manifest of before."""
    versions = found.get("versions")
    for key, entry in (versions if isinstance(versions, dict) else {}).items():
        if is_version_name(key) and isinstance(entry, dict) and not entry_problems(entry, int(key)):
            salvage.entries[int(key)] = entry
        else:
            salvage.damaged.append(f"{path}: entry {key!r} unreadable")
    history = found.get("history")
    for event in history if isinstance(history, list) else []:
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            salvage.history.append(event)
        else:
            salvage.history_dropped += 1


def _salvage_entries(model_dir: Path, salvage: Salvage) -> None:
    """Keeps every entry file that still reads and agrees with its name."""
    for version in entry_versions(model_dir):
        try:
            entry = read_entry(model_dir, version)
        except ManifestError as err:
            salvage.damaged.append(f"{err.path}: {err.problem}")
            continue
        if entry is not None:
            salvage.entries[version] = entry


def _salvage_history(model_dir: Path, committed: int | None, salvage: Salvage) -> None:
    """Keeps the readable, whole history lines (those the head commits, when the head reads)."""
    path = model_dir / HISTORY_FILE
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        salvage.damaged.append(f"{path}: cannot be read ({err.strerror or err})")
        return
    if committed is not None:
        data = data[:committed]
    whole = data[: data.rfind(b"\n") + 1]
    salvage.history_dropped += len(data) > len(whole)  # a torn last line
    for number, line in enumerate(whole.splitlines(), start=1):
        if not line.strip():
            continue
        event, problem = history_event(line)
        if problem:
            salvage.history_dropped += 1
            salvage.damaged.append(f"{path}: line {number} {problem}")
        else:
            salvage.history.append(event)


def back_up_registry(model_dir: str | os.PathLike[str]) -> str | None:
    """Copies the registry files into .manifest/before-rebuild-<time>/; returns that dir (None: no files)."""
    model_dir = as_path(model_dir)
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


def replace_registry(
    model_dir: str | os.PathLike[str],
    *,
    model: str | None,
    serving: dict | None,
    labels: dict[str, int],
    entries: dict[int, dict],
    history: list[dict],
) -> None:
    """Writes a whole registry in place of the old one: the entries, the history, then the head.

    Each file atomically, the head last (it commits the rest). Whatever stands where a registry
    file or dir belongs, and entries not in `entries`, are removed: back them up first. The
    caller holds the model dir's lock.
    """
    model_dir = as_path(model_dir)
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
    for version, entry in sorted(entries.items()):
        _clear_way(versions_dir / f"{version}.json", keep_file=True)
        write_text_atomic(
            versions_dir / f"{version}.json", _dumps_entry(entry), tmp_dir=staging, sync_dir=False
        )
    fsync_path(versions_dir)
    text = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in history)
    write_text_atomic(model_dir / HISTORY_FILE, text, tmp_dir=staging)
    head = {**_new_head(model_dir), "serving": dict(serving or {}), "labels": dict(labels)}
    if model:
        head["model"] = model
    published = sorted(v for v, e in entries.items() if e.get("status") == "published")
    head["newest"] = published[-max(1, int(head["serving"].get("num_latest", 1))) :]
    head["history_bytes"] = len(text.encode())
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
