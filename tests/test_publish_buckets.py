"""Publishing into a bucket (GCS and S3 emulators): the upload order, conflicts, crashes, races.

The promise is TF Serving's: a numeric prefix holds a `saved_model.pb` only once every other
object of that version is in place and verified. These tests kill uploads part-way (an upload
that raises after N objects, as a worker dying mid-upload would leave it) and race publishers,
then read the bucket as TF Serving and the registry's readers do.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import threading
from pathlib import Path

import pytest

from include.errors import StorageError, VersionConflictError
from include.registry.publish import publish_version
from include.registry.serving_config import read_models_config, write_models_config
from include.registry.store import read_head, read_manifest, version_dirs
from include.savedmodel.files import SAVED_MODEL_PB, content_digest, missing_parts
from include.storage import objects
from include.storage.location import BucketURI

VERSION = 20261101000000


def altered_copy(exported: Path, tmp_path: Path) -> Path:
    other = tmp_path / "other" / exported.name
    shutil.copytree(exported, other)
    (other / "assets.extra" / "note.txt").write_text("different")
    return other


def fetched(uri: BucketURI, tmp_path: Path) -> Path:
    """Returns a fresh local copy of a version prefix (what TF Serving would download)."""
    target = tmp_path / "fetched" / uri.name
    shutil.rmtree(target, ignore_errors=True)
    objects.download_tree(uri, target)
    return target


def test_a_version_published_to_a_bucket_is_complete_and_recorded(exported, bucket, tmp_path):
    root = BucketURI(bucket) / "serving"
    result = publish_version(exported, root, "digits", VERSION, record={"run_id": "r1"})
    target = root / "digits" / str(VERSION)
    assert result.status == "published" and result.path == str(target)
    assert result.labels == ["canary", "stable"]
    copy = fetched(target, tmp_path)
    assert missing_parts(copy) == [] and content_digest(copy) == content_digest(exported)
    manifest = read_manifest(root / "digits")
    assert manifest["labels"] == {"canary": VERSION, "stable": VERSION}
    assert manifest["versions"][str(VERSION)]["run_id"] == "r1"
    config = read_models_config(root)
    (model,) = config.model_config_list.config
    assert model.name == "digits" and model.base_path == str(root / "digits")
    assert objects.stat(root / "digits" / ".publish.lock") is None  # the lease is released
    again = publish_version(exported, root, "digits", VERSION)
    assert again.status == "unchanged"


def test_other_content_for_a_published_version_is_refused_unless_forced(exported, bucket, tmp_path):
    root = BucketURI(bucket) / "serving"
    publish_version(exported, root, "digits", VERSION)
    other = altered_copy(exported, tmp_path)
    with pytest.raises(VersionConflictError):
        publish_version(other, root, "digits", VERSION)
    forced = publish_version(other, root, "digits", VERSION, force=True, force_reason="fix")
    assert forced.status == "replaced"
    assert content_digest(fetched(root / "digits" / str(VERSION), tmp_path)) == content_digest(other)


@pytest.mark.parametrize("dies_after", [1, 3])
def test_an_upload_that_dies_leaves_nothing_tf_serving_loads_and_its_retry_completes_it(
    exported, bucket, tmp_path, monkeypatch, dies_after
):
    root = BucketURI(bucket) / "serving"
    real, calls = objects.upload_file, []

    def dying(local, uri):
        calls.append(uri)
        if len(calls) > dies_after:
            raise StorageError(f"connection reset uploading {uri}")
        return real(local, uri)

    monkeypatch.setattr(objects, "upload_file", dying)
    with pytest.raises(StorageError, match="connection reset"):
        publish_version(exported, root, "digits", VERSION)
    target = root / "digits" / str(VERSION)
    left = [s.uri.relative_to(target) for s in objects.listing(target)]
    assert len(left) == dies_after and SAVED_MODEL_PB not in left  # partial, but never loadable
    assert read_head(root / "digits")["newest"] == []  # nothing committed
    monkeypatch.setattr(objects, "upload_file", real)
    retry = publish_version(exported, root, "digits", VERSION)
    assert retry.status == "published" and retry.labels == ["canary", "stable"]
    assert content_digest(fetched(target, tmp_path)) == content_digest(exported)


def test_publishers_racing_on_one_model_lose_nothing(exported, bucket):
    root = BucketURI(bucket) / "serving"
    versions = [VERSION + n for n in range(4)]
    barrier, errors = threading.Barrier(len(versions)), []

    def publish(version):
        barrier.wait()
        try:
            publish_version(exported, root, "digits", version, keep_versions=10)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    manifest = read_manifest(root / "digits")
    assert sorted(int(v) for v in manifest["versions"]) == versions
    assert version_dirs(root / "digits") == versions
    assert manifest["labels"]["canary"] == max(versions)
    write_models_config(root)  # reads clean


def test_a_writer_whose_lease_was_taken_over_cannot_commit(exported, bucket, monkeypatch):
    """A publisher paused past its lease's expiry finds the head changed and commits nothing."""
    from include.registry import store

    root = BucketURI(bucket) / "serving"
    publish_version(exported, root, "digits", VERSION)
    update = store.ManifestUpdate(root / "digits")  # read the head, as a publisher does
    publish_version(exported, root, "digits", VERSION + 1)  # another host commits meanwhile
    update.put_entry(VERSION + 2, {"version": VERSION + 2, "status": "published"})
    with pytest.raises(Exception, match="changed by another writer"):
        update.commit()
    assert read_head(root / "digits")["newest"][-1] == VERSION + 1


def test_labels_move_and_roll_back_in_a_bucket_and_the_cli_lists_it(exported, bucket):
    from include.registry.cli import main
    from include.registry.policy import promote

    root = BucketURI(bucket) / "serving"
    publish_version(exported, root, "digits", VERSION)
    publish_version(exported, root, "digits", VERSION + 1)
    promote(root, "digits", VERSION + 1, "stable", by="alice", reason="better")
    manifest = promote(root, "digits", VERSION, "stable", by="bob", reason="roll back")
    assert manifest["labels"] == {"canary": VERSION + 1, "stable": VERSION}
    moves = [(e["by"], e["version"]) for e in manifest["history"] if e.get("label") == "stable"]
    assert moves[-2:] == [("alice", VERSION + 1), ("bob", VERSION)]
    (model,) = read_models_config(root).model_config_list.config
    assert dict(model.version_labels) == {"canary": VERSION + 1, "stable": VERSION}
    # Not capsys: a session fixture set up under it would leave TensorFlow's logger on its stream.
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["versions", str(root / "digits")]) == 0
    printed = out.getvalue()
    assert str(VERSION) in printed and str(VERSION + 1) in printed and "stable" in printed


def test_a_version_without_its_saved_model_pb_is_never_served_nor_labelled(exported, bucket):
    from include.errors import RegistryError
    from include.registry.policy import set_label

    root = BucketURI(bucket) / "serving"
    publish_version(exported, root, "digits", VERSION)
    publish_version(exported, root, "digits", VERSION + 1)
    objects.delete(root / "digits" / str(VERSION + 1) / SAVED_MODEL_PB)  # deleted by hand
    with pytest.raises(RegistryError, match=r"no saved_model\.pb"):
        set_label(root / "digits", "stable", VERSION + 1, by="alice", reason="try")
    write_models_config(root)
    (model,) = read_models_config(root).model_config_list.config
    assert VERSION + 1 not in dict(model.version_labels).values()
    assert list(model.model_version_policy.specific.versions) == [VERSION]


def test_a_failpoint_holds_a_publish_mid_upload_where_the_test_chose(exported, bucket, tmp_path, monkeypatch):
    """`publish.upload` holds the publish after its first object: the fault tests' barrier."""
    monkeypatch.setenv("SAVEDMODEL_FAILPOINTS", str(tmp_path))
    (tmp_path / "publish.upload.armed").touch()
    root = BucketURI(bucket) / "serving"
    target = root / "digits" / str(VERSION)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (publish_version(exported, root, "digits", VERSION), done.set()))
    thread.start()
    try:
        while not (tmp_path / "publish.upload.reached").exists():
            assert thread.is_alive()
            threading.Event().wait(0.05)
        held = [s.uri.relative_to(target) for s in objects.listing(target)]
        assert len(held) == 1 and SAVED_MODEL_PB not in held  # held where the fault would land
        assert not done.is_set()
    finally:
        (tmp_path / "publish.upload.release").touch()
        thread.join()
    assert done.is_set() and SAVED_MODEL_PB in [s.uri.name for s in objects.listing(target)]


def test_a_stale_writer_cannot_overwrite_an_entry_or_the_history_committed_after_it_read(exported, bucket):
    """Entries and the history are replaced only as read: a writer that lost its lease changes nothing."""
    from include.durable import locked
    from include.errors import RegistryError
    from include.registry import store

    root = BucketURI(bucket) / "serving"
    model_dir = root / "digits"
    publish_version(exported, root, "digits", VERSION)
    stale = store.ManifestUpdate(model_dir)
    stale_entry = stale.entry(VERSION)  # read, with its token
    with locked(model_dir), store.manifest_update(model_dir) as live:  # the lease's next holder
        live.put_entry(VERSION, {**live.entry(VERSION), "note": "live"})
        live.record_event({"event": "note", "version": VERSION}, by="live", reason="after the stale read")
    stale.put_entry(VERSION, {**stale_entry, "note": "stale"})
    stale.record_event({"event": "note", "version": VERSION}, by="stale", reason="lost its lease")
    with pytest.raises(RegistryError, match="changed by another writer"):
        stale.commit()
    manifest = read_manifest(model_dir)
    assert manifest["versions"][str(VERSION)]["note"] == "live"
    assert [e["by"] for e in manifest["history"] if e["event"] == "note"] == ["live"]


def test_a_stale_writer_cannot_cut_the_history_another_writer_committed(exported, bucket):
    from include.durable import locked
    from include.errors import RegistryError
    from include.registry import store

    root = BucketURI(bucket) / "serving"
    model_dir = root / "digits"
    publish_version(exported, root, "digits", VERSION)
    stale = store.ManifestUpdate(model_dir)  # opens the head and the history
    with locked(model_dir), store.manifest_update(model_dir) as live:
        live.record_event({"event": "note", "version": VERSION}, by="live", reason="committed")
    stale.record_event({"event": "note", "version": VERSION}, by="stale", reason="lost its lease")
    with pytest.raises(RegistryError, match="changed by another writer"):
        stale.commit()
    assert [e["by"] for e in read_manifest(model_dir)["history"] if e["event"] == "note"] == ["live"]


def test_the_models_pages_read_a_registry_in_a_bucket(exported, bucket):
    from include.registry.page.data import ModelRef, model_page, models_overview, version_page
    from include.registry.page.html import render_model, render_version

    root = BucketURI(bucket) / "serving"
    publish_version(exported, root, "digits", VERSION, record={"run_id": "r1"})
    publish_version(exported, root, "digits", VERSION + 1, record={"run_id": "r2"})
    ref = ModelRef("digits", "digits_softmax", root, root / "digits", "required")
    (row,) = models_overview([ref])
    assert row["newest_version"] == VERSION + 1 and row["versions_on_disk"] == 2
    assert row["labels"] == {"stable": VERSION, "canary": VERSION + 1} and row["missing_labels"] == {}
    page = model_page(ref)
    assert [v["version"] for v in page["versions"]] == [VERSION + 1, VERSION]
    assert str(VERSION) in render_model(page, base="/registry", ui="/", user="alice")
    detail = version_page(ref, VERSION)
    assert detail["entry"]["run_id"] == "r1" and detail["status"] == "published"
    assert detail["serving"]["served"] and f'base_path: "{root / "digits"}"' in detail["serving"]["block"]
    html = render_version(detail, base="/registry", ui="/", user="alice", may_request=False)
    assert detail["entry"]["content_digest"] in html
