"""Publish: atomic promotion, idempotent republish, refused conflicts, forced replacement, manifest."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from include.errors import IncompleteModelError, RunParamsError, VersionConflictError
from include.manifest import MANIFEST_FILE, read_manifest
from include.publish import publish_version
from include.savedmodel_dir import content_digest
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
        ".publish.lock",
        "20261101000000",
        MANIFEST_FILE,
    ]


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
    assert not list((serving_root / "digits").glob(".staging-*"))


def test_force_replaces_with_a_reason(exported, serving_root, tmp_path):
    """force=True with a reason swaps the content in and records the reason."""
    publish_version(exported, serving_root, "digits", 5)
    other = altered_copy(exported, tmp_path)
    result = publish_version(other, serving_root, "digits", 5, force=True, force_reason="hotfix")
    assert result.status == "replaced"
    assert content_digest(serving_root / "digits" / "5") == content_digest(other)
    assert read_manifest(serving_root / "digits")["versions"]["5"]["force_reason"] == "hotfix"
    assert not [p for p in (serving_root / "digits").iterdir() if p.name.startswith(".staging")]


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
    """A staging dir left by a crashed publisher is cleaned on the next publish."""
    stale = serving_root / "digits" / ".staging-5-deadbeef"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half")
    publish_version(exported, serving_root, "digits", 6)
    assert not stale.exists()


def test_manifest_records_lineage(exported, serving_root):
    """The record passed by the DAG is stored with digest, status and time."""
    publish_version(
        exported, serving_root, "digits", 7, record={"run_id": "r7", "metrics": {"eval_accuracy": 0.96}}
    )
    entry = json.loads((serving_root / "digits" / MANIFEST_FILE).read_text())["versions"]["7"]
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
