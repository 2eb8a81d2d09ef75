"""What the crash harness checks in a bucket after every kill, and how it keeps reruns from waiting.

A bucket has no rename: the promise is the order of the writes (include/registry/publish.py). So
after every kill, reading the bucket as TF Serving and the registry's readers do:

- no version prefix holds a `saved_model.pb` unless it holds every file of the export, each with
  the export's size, and nothing else (one listing of the model dir, compared with the local export);
- every registry object parses: the head, each entry, the committed part of the history;
- labels point at published entries, and a published entry's prefix holds its `saved_model.pb`;

and after each rerun: the version has its published entry and at most one automatic `canary`
move, the head's `newest` ends at the newest published version, no uncommitted history bytes, no
version prefix without `saved_model.pb` (a crashed upload's or deletion's leftovers), no
`.publish.lock` left, and `models.config` parses.

A killed publisher leaves its lease (`.publish.lock`) until it expires; the harness shortens the
lease's TTL (`short_leases`) so that a rerun takes it over within about a second, not 60.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from include.durable import LOCK_FILE
from include.registry.store import HISTORY_FILE, MANIFEST_FILE, VERSIONS_DIR, read_manifest
from include.savedmodel.files import SAVED_MODEL_PB
from include.storage import objects
from include.storage.location import BucketURI
from include.versions import is_version_name

#: The harness's lease TTL in seconds (60 by default, include/storage/objects.py): `CRASH_LEASE_TTL`.
LEASE_TTL = float(os.environ.get("CRASH_LEASE_TTL", "1.0"))


def short_leases(ttl: float = LEASE_TTL) -> None:
    """Makes every lease this process (and its forks) takes expire `ttl` s after its last renewal.

    Through SAVEDMODEL_LEASE_TTL (include/storage/objects.py), as an operator would set it: with
    the default 60 s a killed holder's lease would hold every rerun up for a minute. (A forked
    child opens its own gcsfs/s3fs instances: include/storage/connections.py drops them at fork.)
    """
    os.environ["SAVEDMODEL_LEASE_TTL"] = str(ttl)


def export_sizes(export_dir: Path) -> dict[str, int]:
    """Returns {relative path: size} of every file of a local export: what a version prefix must hold."""
    return {
        p.relative_to(export_dir).as_posix(): p.stat().st_size for p in export_dir.rglob("*") if p.is_file()
    }


def lease_left(*locks: BucketURI) -> float:
    """Returns how long the longest of these leases is still held (0: none is, or all expired)."""
    left = 0.0
    for lock in locks:
        found = objects.read_bytes(lock)
        if found is None:
            continue
        try:
            expires = float(json.loads(found)["expires"])
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: a taker treats it as expired
        left = max(left, expires - time.time())
    return left


def wait_out_leases(*locks: BucketURI) -> float:
    """Sleeps until these leases have expired; returns how long it slept."""
    started = time.monotonic()
    while (left := lease_left(*locks)) > 0:
        time.sleep(left + 0.01)
    return time.monotonic() - started


def locks_of(model_dir: BucketURI) -> tuple[BucketURI, BucketURI]:
    """Returns the leases a publish takes: the model dir's and its serving root's (models.config)."""
    return model_dir / LOCK_FILE, model_dir.parent / LOCK_FILE


def check_bucket(
    model_dir: BucketURI, expected: dict[str, int], *, after_rerun_of: int | None = None
) -> list[str]:
    """Returns invariant violations of a model dir in a bucket (see the module's docstring)."""
    problems: list[str] = []
    prefixes: dict[str, dict[str, int]] = {}
    for found in objects.listing(model_dir):
        top, _, rest = found.uri.relative_to(model_dir).partition("/")
        if is_version_name(top) and rest:
            prefixes.setdefault(top, {})[rest] = found.size
    for version, held in sorted(prefixes.items()):
        if SAVED_MODEL_PB in held and held != expected:
            problems.append(
                f"version prefix {version} holds {SAVED_MODEL_PB} but {_difference(held, expected)}"
            )
    head, torn = _torn_objects(model_dir)
    problems += torn
    try:
        manifest = read_manifest(model_dir)
    except ValueError as err:
        return [*problems, f"manifest does not read: {err}"]
    for version, entry in manifest["versions"].items():
        if entry.get("status") == "published" and SAVED_MODEL_PB not in prefixes.get(version, {}):
            problems.append(f"manifest lists {version} as published but its prefix has no {SAVED_MODEL_PB}")
    for label, version in manifest["labels"].items():
        if manifest["versions"].get(str(version), {}).get("status") != "published":
            problems.append(f"label {label} points at {version}, which has no published entry")
    if after_rerun_of is not None:
        problems += _after_rerun(model_dir, manifest, head, prefixes, after_rerun_of)
    return problems


def _difference(held: dict[str, int], expected: dict[str, int]) -> str:
    missing = sorted(set(expected) - set(held))
    extra = sorted(set(held) - set(expected))
    sizes = sorted(
        f"{n} {held[n]} bytes, export {expected[n]}"
        for n in set(held) & set(expected)
        if held[n] != expected[n]
    )
    return f"differs from the export: missing {missing}, extra {extra}, sizes {sizes}"


def _torn_objects(model_dir: BucketURI) -> tuple[dict, list[str]]:
    """Returns (the head, the registry objects that do not parse): head, entries, committed history."""
    problems, head = [], {}
    names = [MANIFEST_FILE] + [
        s.uri.relative_to(model_dir)
        for s in objects.listing(model_dir / VERSIONS_DIR)
        if s.uri.name.endswith(".json")
    ]
    for name in names:
        found = objects.read_bytes(model_dir / name)
        if found is None:
            continue
        try:
            data = json.loads(found)
        except ValueError as err:
            problems.append(f"{name} does not parse: {err}")
            continue
        head = data if name == MANIFEST_FILE else head
    history = objects.read_bytes(model_dir / HISTORY_FILE) or b""
    committed = head.get("history_bytes", 0)
    if len(history) < committed:
        problems.append(f"the history holds {len(history)} bytes, the head commits {committed}")
    committed_bytes = history[:committed]
    if committed_bytes and not committed_bytes.endswith(b"\n"):
        problems.append("the committed history ends inside a line")
    for number, line in enumerate(committed_bytes.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError as err:
            problems.append(f"committed history line {number} does not parse: {err}")
    return head, problems


def _after_rerun(
    model_dir: BucketURI, manifest: dict, head: dict, prefixes: dict[str, dict[str, int]], version: int
) -> list[str]:
    """Returns what a completed rerun must have settled in a bucket."""
    from include.registry.serving_config import read_models_config

    problems = []
    if manifest["versions"].get(str(version), {}).get("status") != "published":
        problems.append(f"rerun did not record version {version} as published")
    canary = [
        e
        for e in manifest["history"]
        if e.get("event") == "label" and e.get("label") == "canary" and e.get("version") == version
    ]
    if len(canary) > 1:
        problems.append(f"version {version} was labelled canary {len(canary)} times on publish")
    published = [int(v) for v, e in manifest["versions"].items() if e.get("status") == "published"]
    if head.get("newest", [])[-1:] != [max(published)]:
        problems.append(f"head's newest {head.get('newest')} misses the newest version {max(published)}")
    history = objects.stat(model_dir / HISTORY_FILE)
    if (history.size if history else 0) != head.get("history_bytes", 0):
        problems.append("uncommitted history bytes after a rerun")
    leftovers = sorted(v for v, held in prefixes.items() if SAVED_MODEL_PB not in held)
    if leftovers:
        problems.append(f"version prefixes without {SAVED_MODEL_PB} after a rerun: {leftovers}")
    held = [str(lock) for lock in locks_of(model_dir) if objects.stat(lock) is not None]
    if held:
        problems.append(f"lease objects left after a rerun: {held}")
    try:
        read_models_config(model_dir.parent)
    except Exception as err:  # RegistryError: not a valid ModelServerConfig
        problems.append(f"models.config does not parse: {err}")
    return problems
