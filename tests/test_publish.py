"""Publish: atomic promotion, idempotent republish, refused conflicts, forced replacement, manifest."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import threading
from pathlib import Path

import pytest

from include.durable import locked
from include.errors import IncompleteModelError, RunParamsError, VersionConflictError
from include.registry.publish import publish_version
from include.registry.store import (
    CONFIGS_DIR,
    MANIFEST_FILE,
    STAGING_DIR,
    VERSIONS_DIR,
    manifest_update,
    read_manifest,
)
from include.savedmodel.files import content_digest
from tests.helpers import assert_complete


@pytest.fixture
def serving_root(tmp_path) -> Path:
    return tmp_path / "serving"


def altered_copy(exported: Path, tmp_path: Path) -> Path:
    """Returns a complete export whose content differs from `exported` (an extra asset)."""
    other = tmp_path / "other" / exported.name
    shutil.copytree(exported, other)
    (other / "assets.extra" / "note.txt").write_text("different")
    return other


def test_publish_promotes_a_complete_version(exported, serving_root):
    """The version appears under its numeric name, complete, with no staging dirs left."""
    result = publish_version(exported, serving_root, "digits", 20261101000000, record={"run_id": "r1"})
    target = serving_root / "digits" / "20261101000000"
    assert result.status == "published" and result.path == str(target)
    assert_complete(target)
    assert content_digest(target) == content_digest(exported) == result.content_digest
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".manifest",
        ".publish.lock",
        STAGING_DIR,
        "20261101000000",
        MANIFEST_FILE,
    ]
    assert not list((target.parent / STAGING_DIR).iterdir())


def test_republishing_identical_content_is_a_no_op(exported, serving_root):
    """A rerun of the same run publishes nothing new and succeeds."""
    first = publish_version(exported, serving_root, "digits", 5)
    second = publish_version(exported, serving_root, "digits", 5)
    assert second.status == "unchanged" and second.content_digest == first.content_digest
    manifest = read_manifest(serving_root / "digits")
    assert manifest["versions"]["5"]["published_at"] and list(manifest["versions"]) == ["5"]


def test_different_content_under_an_existing_version_fails(exported, serving_root, tmp_path):
    """A conflicting publish raises and leaves the served version untouched."""
    publish_version(exported, serving_root, "digits", 5)
    before = content_digest(serving_root / "digits" / "5")
    with pytest.raises(VersionConflictError, match="already holds different content"):
        publish_version(altered_copy(exported, tmp_path), serving_root, "digits", 5)
    assert content_digest(serving_root / "digits" / "5") == before
    assert not list((serving_root / "digits" / STAGING_DIR).iterdir())


def test_force_replaces_with_a_reason(exported, serving_root, tmp_path):
    """force=True with a reason swaps the content in and records the reason."""
    publish_version(exported, serving_root, "digits", 5)
    other = altered_copy(exported, tmp_path)
    result = publish_version(other, serving_root, "digits", 5, force=True, force_reason="hotfix")
    assert result.status == "replaced"
    assert content_digest(serving_root / "digits" / "5") == content_digest(other)
    assert read_manifest(serving_root / "digits")["versions"]["5"]["force_reason"] == "hotfix"
    assert not list((serving_root / "digits" / STAGING_DIR).iterdir())


def test_force_without_reason_is_refused(exported, serving_root):
    """Forcing needs a reason; nothing is written without one."""
    with pytest.raises(RunParamsError, match="force_reason"):
        publish_version(exported, serving_root, "digits", 5, force=True, force_reason=" ")
    assert not (serving_root / "digits" / "5").exists()


def test_incomplete_export_is_refused(exported, serving_root, tmp_path):
    """An export missing its data shard is never published."""
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    for shard in (broken / "variables").glob("variables.data-*"):
        shard.unlink()
    with pytest.raises(
        IncompleteModelError, match=r"missing data shard variables\.data-00000-of-00001 named by the index"
    ):
        publish_version(broken, serving_root, "digits", 5)
    assert not (serving_root / "digits" / "5").exists()


@pytest.mark.parametrize("version", [0, -1, "../x", 2**63])
def test_bad_version_is_refused_before_any_write(exported, serving_root, version):
    """Invalid version numbers never create a directory."""
    with pytest.raises(RunParamsError):
        publish_version(exported, serving_root, "digits", version)
    assert not serving_root.exists()


def test_stale_staging_dirs_are_removed(exported, serving_root):
    """A staging dir left by a crashed publisher of the single-file layout is cleaned on the next publish."""
    stale = serving_root / "digits" / ".staging-5-deadbeef"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half")
    publish_version(exported, serving_root, "digits", 6)
    assert not stale.exists()


def test_leftovers_in_the_staging_dir_are_removed(exported, serving_root):
    """A staging copy, a version being deleted, temp files of the head and of an entry: the next publish
    removes them all."""
    publish_version(exported, serving_root, "digits", 5)
    staging = serving_root / "digits" / STAGING_DIR
    (staging / "6-deadbeef").mkdir()
    (staging / "6-deadbeef" / "saved_model.pb").write_bytes(b"half")
    (staging / "deleting-4-deadbeef").mkdir()
    (staging / f".{MANIFEST_FILE}.0123abcd.tmp").write_text('{"format"')
    (staging / ".6.json.0123abcd.tmp").write_text("{")
    publish_version(exported, serving_root, "digits", 6)
    assert list(staging.iterdir()) == []
    assert list(read_manifest(serving_root / "digits")["versions"]) == ["5", "6"]


def test_manifest_records_lineage(exported, serving_root):
    """The record passed by the DAG is stored with digest, status and time."""
    publish_version(
        exported, serving_root, "digits", 7, record={"run_id": "r7", "metrics": {"eval_accuracy": 0.96}}
    )
    entry = json.loads((serving_root / "digits" / VERSIONS_DIR / "7.json").read_text())
    assert entry["run_id"] == "r7" and entry["metrics"]["eval_accuracy"] == 0.96
    assert entry["content_digest"] == content_digest(exported) and entry["status"] == "published"


def _publish_in_child(args) -> str:
    export, root, version = args
    return publish_version(export, root, "digits", version).status


def test_concurrent_publishers_lose_nothing(exported, serving_root):
    """Eight processes publishing four versions (each twice) leave exactly four manifest entries."""
    versions = [1, 2, 3, 4] * 2
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        statuses = pool.map(_publish_in_child, [(str(exported), str(serving_root), v) for v in versions])
    assert sorted(statuses) == ["published"] * 4 + ["unchanged"] * 4
    assert list(read_manifest(serving_root / "digits")["versions"]) == ["1", "2", "3", "4"]
    for version in (1, 2, 3, 4):
        assert_complete(serving_root / "digits" / str(version))


def registry_files(model_dir: Path) -> dict[str, tuple[int, int, int]]:
    """Returns every file of a model dir outside its versions: path -> (inode, mtime, size)."""
    found = {}
    for path in model_dir.rglob("*"):
        relative = path.relative_to(model_dir)
        if path.is_file() and not relative.parts[0].isdigit():
            stat = path.stat()
            found[str(relative)] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return found


def model_beside(exported: Path, root: Path, existing: int) -> Path:
    """Returns a model dir holding `existing` published versions (hard-linked copies), labelled."""
    model_dir = root / "digits"
    for version in range(1, existing + 1):
        shutil.copytree(exported, model_dir / str(version), copy_function=os.link)
    with locked(model_dir), manifest_update(model_dir) as update:
        for version in range(1, existing + 1):
            update.put_entry(version, {"version": version, "status": "published"})
        update.labels.update(stable=1, canary=existing)
    return model_dir


@pytest.mark.parametrize("existing", [1, 300])
def test_a_publish_writes_and_lists_the_same_few_files_whatever_the_history(
    exported, tmp_path, monkeypatch, existing
):
    """Beside 1 or 300 versions a publish writes its entry, a history line and the head, and lists
    neither the model dir nor the entries: its cost does not grow with the number of versions."""
    root = tmp_path / "serving"
    model_dir = model_beside(exported, root, existing)
    before = registry_files(model_dir)
    listed: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def listdir(path="."):
        listed.append(os.fspath(path))
        return real_listdir(path)

    def scandir(path="."):
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    result = publish_version(exported, root, "digits", 1000, serving_policy={"version_policy": "latest"})
    monkeypatch.undo()
    assert result.labels == ["canary"]
    after = registry_files(model_dir)
    written = sorted(path for path in after if before.get(path) != after[path])
    assert written == [".manifest/history.jsonl", ".manifest/versions/1000.json", MANIFEST_FILE]
    assert str(model_dir / STAGING_DIR) in listed  # the spy sees listings
    assert str(model_dir) not in listed and str(model_dir / VERSIONS_DIR) not in listed
    assert read_manifest(model_dir)["labels"] == {"stable": 1, "canary": 1000}


def test_a_rerun_after_a_crash_before_the_head_gives_the_version_its_labels(
    exported, serving_root, monkeypatch
):
    """Killed after its entry but before the head: the rerun finds the content, records it, labels it."""
    from include.registry import store as manifest

    publish_version(exported, serving_root, "digits", 10)
    real_write = manifest.write_text_atomic

    def killed_at_the_head(path, *args, **kwargs):
        if path.name == MANIFEST_FILE:
            raise OSError("killed")
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(manifest, "write_text_atomic", killed_at_the_head)
    with pytest.raises(OSError, match="killed"):
        publish_version(exported, serving_root, "digits", 20)
    monkeypatch.undo()
    assert read_manifest(serving_root / "digits")["labels"] == {"canary": 10, "stable": 10}
    rerun = publish_version(exported, serving_root, "digits", 20)
    assert (rerun.status, rerun.labels) == ("unchanged", ["canary"])
    assert read_manifest(serving_root / "digits")["labels"] == {"canary": 20, "stable": 10}
    assert publish_version(exported, serving_root, "digits", 20).labels == []  # a plain rerun: no move


def test_the_runs_config_snapshot_waits_for_the_model_dirs_lock(tmp_path):
    """publish_run's config snapshot goes through the store: written under the model dir's lock, once."""
    from types import SimpleNamespace

    from include.run.steps import archive_config

    snapshot = tmp_path / "config.yaml"
    snapshot.write_bytes(b"name: digits\n")
    record = SimpleNamespace(
        config_sha256=hashlib.sha256(b"name: digits\n").hexdigest(), config_snapshot=snapshot
    )
    model_dir = tmp_path / "serving" / "digits"
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with locked(model_dir):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(30)
    writer = threading.Thread(target=archive_config, args=(record, model_dir))
    writer.start()
    writer.join(0.5)
    assert writer.is_alive() and not (model_dir / CONFIGS_DIR).exists(), "written without the lock"
    release.set()
    writer.join(30)
    holder.join(30)
    (path,) = (model_dir / CONFIGS_DIR).iterdir()
    assert path.name == f"{record.config_sha256}.yaml" and path.read_bytes() == b"name: digits\n"
