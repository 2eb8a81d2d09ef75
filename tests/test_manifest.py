"""The manifest: its files, migration from one file, torn history, labels, promote/rollback, retention."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from include.durable import locked
from include.errors import RegistryError
from include.registry import store as manifest_module
from include.registry.policy import baseline, promote, set_label
from include.registry.serving_config import write_models_config
from include.registry.store import (
    CONFIGS_DIR,
    HISTORY_FILE,
    MANIFEST_FILE,
    VERSIONS_DIR,
    archive_config,
    manifest_update,
    migrate_manifest,
    read_manifest,
    version_dirs,
)
from tests.helpers import parse_models_config, publish_digits


def labels(serving_root: Path) -> dict:
    return read_manifest(serving_root / "digits")["labels"]


def test_baseline_is_stable_else_the_newest_published_version():
    """A candidate is compared with `stable`; without a published stable, with the newest version."""
    versions = {"1": {"status": "published"}, "2": {"status": "published"}, "3": {"status": "deleted"}}
    assert baseline({"labels": {"stable": 1}, "versions": versions}) is versions["1"]
    assert baseline({"labels": {"stable": 3}, "versions": versions}) is versions["2"]
    assert baseline({"labels": {}, "versions": {}}) is None


def test_first_version_is_stable_and_canary(exported, serving_root):
    """With nothing served yet, the first version gets both labels."""
    assert publish_digits(exported, serving_root, 10).labels == ["canary", "stable"]
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_newer_version_becomes_canary_and_backfill_gets_no_label(exported, serving_root):
    """A newer version is canary (stable stays); an older, backfilled one is left unlabelled."""
    publish_digits(exported, serving_root, 10)
    assert publish_digits(exported, serving_root, 20).labels == ["canary"]
    assert publish_digits(exported, serving_root, 5, run_type="backfill").labels == []
    assert labels(serving_root) == {"canary": 20, "stable": 10}


def test_set_label_records_who_and_why(exported, serving_root):
    """Moving a label appends who, why and the previous version to the history."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    manifest = set_label(serving_root / "digits", "stable", 20, by="alice", reason="canary looked good")
    assert manifest["labels"]["stable"] == 20
    event = manifest["history"][-1]
    assert (event["by"], event["reason"], event["previous"], event["version"]) == (
        "alice",
        "canary looked good",
        10,
        20,
    )


@pytest.mark.parametrize(
    ("label", "version", "reason", "message"),
    [
        ("stable", 99, "why", "not a published version"),
        ("golden", 10, "why", "label: expected one of"),
        ("stable", 10, " ", "needs a reason"),
    ],
)
def test_set_label_refuses_bad_requests(exported, serving_root, label, version, reason, message):
    """Unknown versions, unknown labels and missing reasons are refused; nothing changes."""
    publish_digits(exported, serving_root, 10)
    with pytest.raises(RegistryError, match=message):
        set_label(serving_root / "digits", label, version, by="bob", reason=reason)
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_promote_rolls_back_to_a_loadable_version(exported, serving_root):
    """Rollback: stable goes back to the older version, and models.config follows."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    set_label(serving_root / "digits", "stable", 20, by="alice", reason="promote")
    promote(serving_root, "digits", 10, "stable", by="bob", reason="v20 misbehaves")
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert config.version_labels["stable"] == 10 and config.version_labels["canary"] == 20


def test_promote_refuses_a_version_that_does_not_load(exported, serving_root):
    """A version whose files look whole but that TensorFlow cannot load gets no label."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    # Well-formed protobuf framing (a meta_graphs field), meaningless content.
    (serving_root / "digits" / "20" / "saved_model.pb").write_bytes(b"\x12\x03abc")
    with pytest.raises(RegistryError, match="does not load"):
        promote(serving_root, "digits", 20, "stable", by="bob", reason="try")
    (serving_root / "digits" / "20" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(RegistryError, match=r"is not complete: saved_model\.pb is truncated or corrupted"):
        promote(serving_root, "digits", 20, "stable", by="bob", reason="try")
    assert labels(serving_root)["stable"] == 10


def test_retention_keeps_newest_and_labelled_versions(exported, serving_root):
    """keep_versions=2 deletes the oldest unlabelled versions only, and records the deletions."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version, keep_versions=2)
    result = publish_digits(exported, serving_root, 40, keep_versions=2)
    # stable=10 (first publish) is protected; 20 is the oldest unlabelled one.
    assert result.deleted == [20]
    on_disk = sorted(int(p.name) for p in (serving_root / "digits").iterdir() if p.name.isdigit())
    assert on_disk == [10, 30, 40]
    manifest = read_manifest(serving_root / "digits")
    assert manifest["versions"]["20"]["status"] == "deleted"
    assert any(e["event"] == "delete" and e["version"] == 20 for e in manifest["history"])


#: A single-file manifest as the registry wrote it before one file per version.
OLD_MANIFEST = {
    "model": "digits",
    "serving": {"version_policy": "latest", "num_latest": 2},
    "labels": {"stable": 10, "canary": 20},
    "versions": {
        "9": {"version": 9, "status": "deleted", "deleted_at": "2026-10-01T00:00:00+00:00"},
        "10": {"version": 10, "status": "published", "metrics": {"eval_accuracy": 0.9}},
        "20": {"version": 20, "status": "published", "metrics": {"eval_accuracy": 0.95}},
    },
    "history": [
        {"event": "label", "label": "stable", "version": 10, "by": "publish", "reason": "automatic"},
        {"event": "label", "label": "canary", "version": 20, "by": "publish", "reason": "automatic"},
    ],
}


def write_old_manifest(exported: Path, serving_root: Path) -> Path:
    """Returns a model dir in the single-file layout, versions 10 and 20 on disk."""
    model_dir = serving_root / "digits"
    for version in (10, 20):
        shutil.copytree(exported, model_dir / str(version))
    (model_dir / MANIFEST_FILE).write_text(json.dumps(OLD_MANIFEST, indent=2))
    return model_dir


def test_manifest_is_a_head_one_entry_per_version_and_a_history_log(exported, serving_root):
    """The head holds labels and policy only; each version has its own entry; history is JSON lines."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    model_dir = serving_root / "digits"
    head = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert "versions" not in head and head["labels"] == {"canary": 20, "stable": 10}
    assert sorted(p.name for p in (model_dir / VERSIONS_DIR).iterdir()) == ["10.json", "20.json"]
    lines = (model_dir / HISTORY_FILE).read_bytes().splitlines()
    assert [json.loads(line)["version"] for line in lines] == [10, 10, 20]
    manifest = read_manifest(model_dir)  # the dict of before, assembled
    assert set(manifest) == {"model", "serving", "labels", "versions", "history"}
    assert list(manifest["versions"]) == ["10", "20"] and manifest["serving"]["num_latest"] == 2


def test_a_single_file_manifest_is_read_as_is_and_migrated_by_the_next_publish(exported, serving_root):
    """Before any write the old file reads unchanged; a publish migrates it and keeps every record."""
    model_dir = write_old_manifest(exported, serving_root)
    assert read_manifest(model_dir) == OLD_MANIFEST
    (model_dir / ".staging-30-deadbeef").mkdir()  # a crashed publisher of the old layout left these
    (model_dir / f".{MANIFEST_FILE}.0123abcd.tmp").write_text("{")
    assert publish_digits(exported, serving_root, 30).labels == ["canary"]
    manifest = read_manifest(model_dir)
    assert {k: manifest["versions"][k] for k in ("9", "10", "20")} == OLD_MANIFEST["versions"]
    assert manifest["labels"] == {"stable": 10, "canary": 30}
    assert manifest["history"][:2] == OLD_MANIFEST["history"]
    assert manifest["history"][2]["version"] == 30 and manifest["serving"] == OLD_MANIFEST["serving"]
    assert json.loads((model_dir / MANIFEST_FILE).read_text())["format"] == 2
    assert not [p for p in model_dir.iterdir() if p.name.startswith((".staging-", f".{MANIFEST_FILE}."))]
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert list(config.model_version_policy.specific.versions) == [10, 20, 30]


def test_a_migration_that_crashes_leaves_the_old_file_in_charge(exported, serving_root, monkeypatch):
    """Entries written but the head not yet replaced: readers keep the old file; the next write redoes it."""
    model_dir = write_old_manifest(exported, serving_root)
    real_write = manifest_module.write_text_atomic

    def crash_on_head(path, *args, **kwargs):
        if path.name == MANIFEST_FILE:
            raise OSError("killed")
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "write_text_atomic", crash_on_head)
    with pytest.raises(OSError, match="killed"):
        migrate_manifest(model_dir)
    assert (model_dir / VERSIONS_DIR / "20.json").is_file()
    assert read_manifest(model_dir) == OLD_MANIFEST
    monkeypatch.undo()
    migrate_manifest(model_dir)
    assert read_manifest(model_dir) == OLD_MANIFEST


def test_a_torn_history_line_is_ignored_and_cut_by_the_next_write(exported, serving_root):
    """History bytes no head committed (a crash mid-append) are invisible, then dropped under the lock."""
    publish_digits(exported, serving_root, 10)
    model_dir = serving_root / "digits"
    history = model_dir / HISTORY_FILE
    committed = read_manifest(model_dir)["history"]
    with open(history, "ab") as handle:  # a whole line and half of another, never committed
        handle.write(b'{"event": "label", "label": "canary", "version": 99}\n{"event": "la')
    assert read_manifest(model_dir)["history"] == committed
    publish_digits(exported, serving_root, 20)
    lines = [json.loads(line) for line in history.read_bytes().splitlines()]
    assert lines[: len(committed)] == committed and [e["version"] for e in lines[len(committed) :]] == [20]
    assert history.stat().st_size == json.loads((model_dir / MANIFEST_FILE).read_text())["history_bytes"]


def test_a_reader_beside_a_writer_sees_old_or_new_entries_never_torn(exported, serving_root):
    """While a writer rewrites an entry and moves labels 200 times, every read is whole and consistent."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    model_dir = serving_root / "digits"
    stop, problems, reads = threading.Event(), [], [0]

    def read_until_stopped() -> None:
        while not stop.is_set():
            try:
                manifest = read_manifest(model_dir)
            except ValueError as err:
                problems.append(f"torn read: {err}")
                continue
            reads[0] += 1
            if (
                set(manifest["versions"]) != {"10", "20"}
                or manifest["versions"]["20"].get("status") != "published"
            ):
                problems.append(f"entries: {manifest['versions']}")
            if not set(manifest["labels"].values()) <= {10, 20}:
                problems.append(f"labels: {manifest['labels']}")

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        for i in range(200):
            with locked(model_dir), manifest_update(model_dir) as update:
                update.put_entry(20, {**update.entry(20), "note": "x" * (i * 50)})
                update.labels["canary"] = 10 if i % 2 else 20
                update.record_event({"event": "label", "label": "canary", "version": 20}, by="t", reason="r")
    finally:
        stop.set()
        reader.join(30)
    assert problems == [] and reads[0] > 20, (problems[:3], reads)


# --- version dirs deleted by hand, config snapshots, what the store lists ----------------------------


def served(serving_root: Path) -> tuple[list[int], dict]:
    """Returns (versions, labels) that models.config gives TF Serving for `digits`."""
    (config,) = parse_models_config(serving_root).model_config_list.config
    return list(config.model_version_policy.specific.versions), dict(config.version_labels)


def test_the_next_publish_drops_a_version_dir_deleted_by_hand_from_models_config(exported, serving_root):
    """stable's dir deleted by hand: the next publish leaves it and its label out; the manifest keeps both."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    shutil.rmtree(serving_root / "digits" / "10")
    publish_digits(exported, serving_root, 40)
    assert served(serving_root) == ([30, 40], {"canary": 40})
    assert labels(serving_root) == {"stable": 10, "canary": 40}  # a person decides where stable goes


def test_the_next_label_move_drops_a_deleted_newest_version(exported, serving_root):
    """The newest dir deleted by hand: a label move rewrites models.config with the newest two on disk."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    shutil.rmtree(serving_root / "digits" / "30")
    promote(serving_root, "digits", 20, "stable", by="bob", reason="30 is gone")
    assert served(serving_root) == ([10, 20], {"stable": 20})


def test_promote_refuses_a_version_whose_dir_is_gone(exported, serving_root):
    """A label cannot be moved onto a version deleted by hand: refused, labels and models.config unchanged."""
    for version in (10, 20):
        publish_digits(exported, serving_root, version)
    shutil.rmtree(serving_root / "digits" / "10")
    before = (serving_root / "models.config").read_bytes()
    with pytest.raises(RegistryError, match="is not complete"):
        promote(serving_root, "digits", 10, "canary", by="bob", reason="roll back")
    assert labels(serving_root) == {"stable": 10, "canary": 20}
    assert (serving_root / "models.config").read_bytes() == before


def test_models_config_leaves_out_an_incomplete_version_dir(exported, serving_root):
    """A version dir whose variables were removed by hand is not named in models.config."""
    for version in (10, 20):
        publish_digits(exported, serving_root, version)
    shutil.rmtree(serving_root / "digits" / "20" / "variables")
    write_models_config(serving_root)
    assert served(serving_root) == ([10], {"stable": 10})


def test_archive_config_writes_the_snapshot_once_under_the_model_dirs_lock(tmp_path):
    """The config snapshot waits for the model dir's lock, is written once, and refuses a non-digest name."""
    model_dir, sha = tmp_path / "digits", "a" * 64
    model_dir.mkdir()
    held = threading.Event()

    def hold_lock() -> None:
        with locked(model_dir):
            held.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait()
    started = time.monotonic()
    path = archive_config(model_dir, sha, b"name: digits\n")
    assert time.monotonic() - started >= 0.4, "written while another writer held the lock"
    holder.join()
    assert path == model_dir / CONFIGS_DIR / f"{sha}.yaml" and path.read_bytes() == b"name: digits\n"
    assert archive_config(model_dir, sha, b"other\n").read_bytes() == b"name: digits\n"
    with pytest.raises(RegistryError, match="expected 64 lowercase hex digits"):
        archive_config(model_dir, "../../etc", b"x")


def test_version_dirs_are_the_dirs_tf_serving_would_load(tmp_path):
    """Only dirs with a version name count: not files, not zero-padded names, not the registry's dirs."""
    for name in ("12", "7", "007", ".staging", ".manifest", "runs"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file")
    assert version_dirs(tmp_path) == [7, 12] and version_dirs(tmp_path / "none") == []


#: The store's names for its files and dirs: no module but the store may use them.
_FORMAT_NAMES = {"MANIFEST_FILE", "RECORDS_DIR", "VERSIONS_DIR", "HISTORY_FILE", "STAGING_DIR", "CONFIGS_DIR"}


def test_no_module_but_the_store_knows_the_registrys_files():
    """Outside store.py, include/, plugins/ and dags/ name none of the registry's files or store internals."""
    import ast

    root = Path(__file__).parents[1]
    store_file = root / "include" / "registry" / "store.py"
    literals = {
        Path(manifest_module.MANIFEST_FILE).name,
        manifest_module.RECORDS_DIR,
        manifest_module.VERSIONS_DIR,
        manifest_module.HISTORY_FILE,
        manifest_module.STAGING_DIR,
        manifest_module.CONFIGS_DIR,
    }
    found = []
    for path in sorted(p for d in ("include", "plugins", "dags") for p in (root / d).rglob("*.py")):
        if path == store_file:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and node.module == "include.registry.store":
                found += [
                    f"{where} imports {a.name}"
                    for a in node.names
                    if a.name in _FORMAT_NAMES or a.name.startswith("_")
                ]
            elif isinstance(node, ast.Attribute) and node.attr in _FORMAT_NAMES:
                found.append(f"{where} uses .{node.attr}")
            elif isinstance(node, ast.Constant) and id(node) not in docstrings and node.value in literals:
                found.append(f"{where} spells {node.value!r}")
    assert found == [], "registry format known outside include/registry/store.py:\n" + "\n".join(found)
