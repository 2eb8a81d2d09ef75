"""Hostile stores and registries: every one refused before training, named, the serving tree unchanged.

Two corpora. STORE: storage a run could not publish to (a file, a read-only or full file system,
a staging area on another file system); preflight refuses it with the path and the reason before
anything is trained. REGISTRY: a damaged `manifest.json`, version entry or `history.jsonl`; every
reader (preflight, runs, `make versions`, the Models page through read_manifest) refuses it with
a ManifestError naming the file and what is wrong. Then the rebuild restores a usable registry from
the version dirs, keeping the labels and entries that still read.

Each refusal is checked the same way: the message names the path and the problem, the error is
permanent (the Airflow task fails without retry), and every byte under the serving root is as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from include.errors import ManifestError, PipelineError, PreflightError, RegistryError
from include.registry.cli import main as registry_cli
from include.registry.publish import publish_version
from include.registry.rebuild import BACKUP_PREFIX, rebuild_registry
from include.registry.store import HISTORY_FILE, MANIFEST_FILE, STAGING_DIR, VERSIONS_DIR, read_manifest
from include.run.preflight import MARGIN_BYTES, check_writable_dir, preflight, preflight_storage, version_size
from include.savedmodel.files import content_digest

MODEL = "digits"


# --- fixtures and named assertions -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """Returns a small complete SavedModel (one variable, one signature): no training needed."""
    import tensorflow as tf

    class Doubler(tf.Module):
        def __init__(self) -> None:
            self.weights = tf.Variable([[1.0], [2.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, x):
            return {"y": tf.matmul(x, self.weights)}

    module = Doubler()
    target = tmp_path_factory.mktemp("tiny") / "1"
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.__call__})
    return target


@dataclass(frozen=True)
class Store:
    """A serving root with versions 10 and 20 of one model published (stable 10, canary 20)."""

    serving_root: Path
    export_root: Path

    @property
    def model_dir(self) -> Path:
        """Returns the model's dir under the serving root."""
        return self.serving_root / MODEL

    def preflight(self, **kwargs):
        """Returns preflight's report on this store."""
        return preflight_storage(self.serving_root, self.export_root, MODEL, **kwargs)


def publish(export: Path, serving_root: Path, version: int):
    """Publishes `export` as `version` with a small lineage record; returns the PublishResult."""
    record = {"run_id": f"run {version}", "run_type": "scheduled", "metrics": {"eval_accuracy": 0.9}}
    return publish_version(export, serving_root, MODEL, version, record=record, keep_versions=5)


@pytest.fixture
def store(tmp_path, tiny_export) -> Store:
    """Returns a healthy store: versions 10 and 20 published, stable 10, canary 20."""
    found = Store(tmp_path / "serving", tmp_path / "exports")
    publish(tiny_export, found.serving_root, 10)
    publish(tiny_export, found.serving_root, 20)
    return found


def tree_state(root: Path) -> dict[str, str]:
    """Returns every path under `root` with its content hash (files), link target or `dir`."""
    state = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[key] = "dir"
    if root.is_file():
        state["."] = hashlib.sha256(root.read_bytes()).hexdigest()
    return state


def assert_refused(
    action: Callable[[], object], error: type[PipelineError], root: Path, *fragments: str
) -> PipelineError:
    """Asserts `action` raises a permanent `error` whose message holds every fragment, `root` unchanged."""
    before = tree_state(root)
    with pytest.raises(error) as raised:
        action()
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert raised.value.permanent, "a retry cannot help: the task must fail at once"
    assert tree_state(root) == before, "a refused action changed the serving tree"
    return raised.value


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """Mounts a tmpfs at `where` for the block; skips the test where mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@contextlib.contextmanager
def read_only_dir(where: Path) -> Iterator[Path]:
    """Yields an empty dir nothing can be created in: chmod 0555, or (as root) a read-only tmpfs."""
    if os.geteuid() == 0:  # root writes through permission bits: it takes a read-only mount
        with mounted_tmpfs(where, "ro,size=64k") as mounted:
            yield mounted
        return
    where.mkdir(parents=True)
    where.chmod(0o555)
    try:
        yield where
    finally:
        where.chmod(0o755)


@contextlib.contextmanager
def dir_on_another_file_system(near: Path) -> Iterator[Path]:
    """Yields a fresh dir on another file system than `near` (/dev/shm); skips if there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(near).st_dev:
        pytest.skip("no /dev/shm on another file system than the test's tmp dir")
    other = Path(tempfile.mkdtemp(dir=shm))
    try:
        yield other
    finally:
        shutil.rmtree(other, ignore_errors=True)


# --- STORE: preflight refuses storage a run could not publish to -------------------------------------


def test_preflight_passes_on_a_healthy_store_and_leaves_nothing_behind(store):
    """A usable store passes; the probe files are gone, the tree is as before; the need is the newest size."""
    before = tree_state(store.serving_root)
    report = store.preflight()
    assert tree_state(store.serving_root) == before
    assert report.last_version == 20
    assert report.needed_bytes == version_size(store.model_dir / "20") + MARGIN_BYTES
    assert not store.export_root.exists(), "preflight creates nothing"


def test_preflight_passes_on_roots_not_created_yet(tmp_path):
    """Roots that do not exist yet pass when their nearest existing ancestor is a writable dir."""
    report = preflight_storage(tmp_path / "a" / "serving", tmp_path / "b" / "exports", MODEL)
    assert report.last_version is None and not (tmp_path / "a").exists()


def test_serving_root_is_a_file(tmp_path):
    """storage.serving_root a file: named, with 'is a file, expected a directory'."""
    root = tmp_path / "serving"
    root.write_text("not a dir")
    assert_refused(
        lambda: preflight_storage(root, tmp_path / "exports", MODEL),
        PreflightError,
        root,
        f"{root} is a file, expected a directory (storage.serving_root)",
        "nothing was trained",
    )


def test_serving_root_under_a_file(tmp_path):
    """A serving root whose parent is a file cannot be created: the file in the way is named."""
    blocker = tmp_path / "mnt"
    blocker.write_text("")
    root = blocker / "models"
    assert_refused(
        lambda: preflight_storage(root, tmp_path / "exports", MODEL),
        PreflightError,
        blocker,
        f"{root} cannot be created (storage.serving_root): {blocker} is a file, not a directory",
    )


def test_serving_root_is_a_dangling_symlink(tmp_path):
    """A serving root that is a symlink to a missing dir (an unmounted volume) is named as such."""
    root = tmp_path / "serving"
    root.symlink_to(tmp_path / "unmounted-volume")
    assert_refused(
        lambda: preflight_storage(root, tmp_path / "exports", MODEL),
        PreflightError,
        tmp_path,
        f"{root} is a symlink to {tmp_path / 'unmounted-volume'}, which is missing",
    )


def test_serving_root_is_read_only(tmp_path):
    """A serving root nothing can be written in (read-only mount, or mode 0555) is refused."""
    with read_only_dir(tmp_path / "serving") as root:
        error = assert_refused(
            lambda: preflight_storage(root, tmp_path / "exports", MODEL), PreflightError, root, str(root)
        )
        assert "read-only file system" in str(error) or "is not writable" in str(error)


def test_model_dir_is_read_only(store, tmp_path):
    """An existing model dir made read-only after publishing is refused before training."""
    if os.geteuid() == 0:
        with mounted_tmpfs(tmp_path / "ro-serving", "size=1m") as root:
            shutil.copytree(store.model_dir, root / MODEL, symlinks=True)
            subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
            assert_refused(
                lambda: preflight_storage(root, store.export_root, MODEL),
                PreflightError,
                root,
                f"{root}",
                "read-only file system",
            )
        return
    store.model_dir.chmod(0o555)
    try:
        assert_refused(
            store.preflight, PreflightError, store.serving_root, str(store.model_dir), "not writable"
        )
    finally:
        store.model_dir.chmod(0o755)


def test_export_root_is_a_file(store):
    """storage.export_root a file: the runs dir cannot be created and the file is named."""
    store.export_root.write_text("")
    assert_refused(
        store.preflight,
        PreflightError,
        store.serving_root,
        f"{store.export_root / MODEL / 'runs'} cannot be created (the runs dir under storage.export_root)",
        f"{store.export_root} is a file, not a directory",
    )


def test_export_root_is_read_only(store, tmp_path):
    """An export root nothing can be written in is refused, naming the runs dir and the root."""
    with read_only_dir(tmp_path / "ro-exports") as root:
        assert_refused(
            lambda: preflight_storage(store.serving_root, root, MODEL),
            PreflightError,
            store.serving_root,
            f"{root / MODEL / 'runs'}",
            f"{root}",
        )


def test_train_task_checks_the_runs_dir_before_writing_the_record(tmp_path):
    """The train task's first check (before start_run) names an export root that is a file."""
    (tmp_path / "exports").write_text("")
    with pytest.raises(PreflightError, match="is a file, not a directory"):
        check_writable_dir(tmp_path / "exports" / MODEL / "runs", "the runs dir under storage.export_root")


def test_staging_area_on_another_file_system(store):
    """A `.staging/` that is a symlink onto another file system: publish's rename could not work."""
    with dir_on_another_file_system(store.serving_root) as other:
        (store.model_dir / STAGING_DIR).rmdir()
        (store.model_dir / STAGING_DIR).symlink_to(other)
        assert_refused(
            store.preflight,
            PreflightError,
            store.serving_root,
            f"{store.model_dir / STAGING_DIR} is on another file system",
            "only works within one file system",
        )


def test_registry_entries_on_another_file_system(store):
    """`.manifest/versions/` on another file system than `.staging/`: its atomic writes could not work."""
    versions = store.model_dir / VERSIONS_DIR
    with dir_on_another_file_system(store.serving_root) as other:
        shutil.copytree(versions, other / "versions")
        shutil.rmtree(versions)
        versions.symlink_to(other / "versions")
        assert_refused(
            store.preflight, PreflightError, store.serving_root, f"{versions} is on another file system"
        )


def test_staging_area_is_a_file(store):
    """A file where `.staging/` belongs is named."""
    staging = store.model_dir / STAGING_DIR
    staging.rmdir()
    staging.write_text("")
    assert_refused(
        store.preflight, PreflightError, store.serving_root, f"{staging} is a file, expected a directory"
    )


def test_not_enough_free_space_for_the_last_version_size(store):
    """Fewer bytes free than the next version needs: the file system's free bytes and the need are named."""
    free = shutil.disk_usage(store.serving_root).free
    assert_refused(
        lambda: store.preflight(needed_bytes=free * 2),
        PreflightError,
        store.serving_root,
        "bytes free on its file system, expected at least",
        f"{free * 2:,} bytes asked for",
    )


def test_a_full_file_system_is_refused(store, tmp_path):
    """A real small file system (a 512 KiB tmpfs) as serving root cannot take a version and the registry."""
    with mounted_tmpfs(tmp_path / "small", "size=512k") as root:
        shutil.copytree(store.model_dir, root / MODEL, symlinks=True)
        assert_refused(
            lambda: preflight_storage(root, store.export_root, MODEL),
            PreflightError,
            root,
            f"{root / MODEL} has",
            "bytes free on its file system",
            "the newest published version, 20, is that large",
        )


def test_train_run_runs_preflight_before_training(tmp_path, monkeypatch):
    """train_run refuses a serving root that is a file before training starts."""
    from include.config import load_pipeline_config
    from include.run import steps as run_steps
    from tests.helpers import make_raw, write_pipeline

    config = load_pipeline_config(write_pipeline(tmp_path / "p", make_raw(tmp_path, tmp_path / "data")))
    config.storage.serving_root.write_text("")
    monkeypatch.setattr(run_steps, "train_model", lambda *a, **k: pytest.fail("trained despite preflight"))
    with pytest.raises(PreflightError, match="is a file, expected a directory"):
        run_steps.train_run(SimpleNamespace(config=config))
    with pytest.raises(PreflightError):
        preflight(config)


def test_preflight_and_registry_errors_fail_the_airflow_task_without_retry():
    """Both errors become AirflowFailException: the task fails at once, no retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from plugins.savedmodel_errors import fail_fast_on_permanent_errors

    for error in (PreflightError("/x", "is a file"), ManifestError("/x/manifest.json", "is empty", "/x")):
        with pytest.raises(AirflowFailException, match=str(error.path)), fail_fast_on_permanent_errors():
            raise error


# --- REGISTRY: damaged files are named by every reader ------------------------------------------------


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = _json(path)
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


HEAD, ENTRY, HISTORY = MANIFEST_FILE, f"{VERSIONS_DIR}/20.json", HISTORY_FILE

#: (case, file, damage, words of the message): each case must be named so by every reader.
REGISTRY_CORPUS = [
    ("head empty", HEAD, lambda p: p.write_text(""), "is empty (0 bytes), expected a JSON object"),
    ("head truncated", HEAD, _truncate, "is not valid JSON"),
    ("head not JSON", HEAD, lambda p: p.write_text('{"labels": {"stable": 10,}}'), "is not valid JSON"),
    ("head not UTF-8", HEAD, lambda p: p.write_bytes(b"\xff\xfe{}"), "is not valid JSON"),
    ("head a list", HEAD, lambda p: p.write_text("[1, 2]"), "expected a JSON object, got a list"),
    ("head a directory", HEAD, lambda p: (p.unlink(), p.mkdir()), "cannot be read"),
    (
        "head labels a list",
        HEAD,
        lambda p: _edit_json(p, lambda d: d.update(labels=[10])),
        "labels: expected",
    ),
    (
        "head label a string",
        HEAD,
        lambda p: _edit_json(p, lambda d: d["labels"].update(stable="10")),
        "labels.stable: expected a version number, got a string",
    ),
    (
        "head key missing",
        HEAD,
        lambda p: _edit_json(p, lambda d: d.pop("history_bytes")),
        "missing key 'history_bytes'",
    ),
    (
        "head newest not versions",
        HEAD,
        lambda p: _edit_json(p, lambda d: d.update(newest=["20"])),
        "newest: expected versions",
    ),
    (
        "head serving policy wrong",
        HEAD,
        lambda p: _edit_json(p, lambda d: d.update(serving={"num_latest": 0})),
        "serving.num_latest: expected at least 1, got 0",
    ),
    (
        "head format edited",
        HEAD,
        lambda p: _edit_json(p, lambda d: d.update(format="2")),
        "expected manifest format 2, got '2'",
    ),
    ("entry empty", ENTRY, lambda p: p.write_text("\n"), "is empty (1 bytes)"),
    ("entry truncated", ENTRY, _truncate, "is not valid JSON"),
    (
        "entry of another version",
        ENTRY,
        lambda p: _edit_json(p, lambda d: d.update(version=10)),
        "version: 10 disagrees with the entry's name 20",
    ),
    (
        "entry status unknown",
        ENTRY,
        lambda p: _edit_json(p, lambda d: d.update(status="publishd")),
        "status: expected one of ['published', 'deleted'], got 'publishd'",
    ),
    (
        "entry status missing",
        ENTRY,
        lambda p: _edit_json(p, lambda d: d.pop("status")),
        "missing key 'status'",
    ),
    (
        "entry metrics wrong type",
        ENTRY,
        lambda p: _edit_json(p, lambda d: d.update(metrics="high")),
        "metrics: expected an object, got a string",
    ),
    (
        "history garbage line",
        HISTORY,
        lambda p: p.write_bytes(b"\x00garbage\n" + p.read_bytes()[9:]),
        "line 1 is not valid JSON",
    ),
    (
        "history line not an event",
        HISTORY,
        lambda p: p.write_bytes(p.read_bytes().replace(b'{"at"', b'[{"at"', 1).replace(b"}\n", b"}]\n", 1)),
        "line 1 expected a JSON object with an 'event', got a list",
    ),
]


@pytest.fixture(params=REGISTRY_CORPUS, ids=[case[0] for case in REGISTRY_CORPUS])
def damaged(request, store) -> tuple[Store, Path, str]:
    """Returns a store whose registry has one damaged file, that file, and the expected message words."""
    _, name, damage, words = request.param
    path = store.model_dir / name
    damage(path)
    return store, path, words


def test_every_reader_names_the_damaged_file(damaged, capsys):
    """Preflight, read_manifest (runs, the Models page) and `make versions` name the file and the damage."""
    store, path, words = damaged
    for action in (store.preflight, lambda: read_manifest(store.model_dir)):
        error = assert_refused(
            action, ManifestError, store.serving_root, f"damaged registry file {path}: ", words
        )
        assert (error.path, error.model_dir) == (str(path), str(store.model_dir))
        assert f"python -m include.registry.cli rebuild {store.model_dir}" in str(error)
    assert registry_cli(["versions", str(store.model_dir)]) == 1
    assert f"error: damaged registry file {path}: " in capsys.readouterr().err


@pytest.mark.parametrize("case", [c for c in REGISTRY_CORPUS if c[1] == HEAD], ids=lambda c: c[0])
def test_publish_refuses_a_damaged_head(case, store, tiny_export):
    """Publishing into a model whose manifest.json is damaged is refused; nothing is added."""
    _, name, damage, words = case
    damage(store.model_dir / name)
    assert_refused(
        lambda: publish(tiny_export, store.serving_root, 30), ManifestError, store.serving_root, words
    )


def test_a_damaged_single_file_manifest_of_before_is_named(store):
    """A single-file manifest of before with its versions as a list is named, not migrated."""
    (store.model_dir / MANIFEST_FILE).write_text(json.dumps({"labels": {}, "versions": [10, 20]}))
    assert_refused(
        lambda: read_manifest(store.model_dir),
        ManifestError,
        store.serving_root,
        "versions: expected an object, got a list",
    )


# --- the rebuild: a usable registry again, keeping what still reads -------------------------------------


def assert_usable(store: Store, tiny_export: Path) -> dict:
    """Asserts the registry reads, preflight passes and a new version publishes; returns the manifest."""
    manifest = read_manifest(store.model_dir)
    store.preflight()
    assert publish(tiny_export, store.serving_root, 30).status == "published"
    return manifest


def test_rebuild_after_every_damage_restores_a_usable_registry(damaged, tiny_export):
    """Whatever the damage, the rebuild registers both versions and keeps the labels 10/20 where they read."""
    store, _, _ = damaged
    report = rebuild_registry(store.model_dir)
    assert report.published == [10, 20]
    manifest = assert_usable(store, tiny_export)
    assert sorted(manifest["versions"]) == ["10", "20"]
    assert manifest["labels"] == {"stable": 10, "canary": 20}
    for version in ("10", "20"):
        assert manifest["versions"][version]["content_digest"] == content_digest(store.model_dir / version)


def test_rebuild_keeps_readable_entries_and_rebuilds_the_damaged_one(store):
    """A damaged entry is rebuilt from its dir (digest, mtime); the readable one keeps its lineage."""
    (store.model_dir / VERSIONS_DIR / "20.json").write_text("{")
    report = rebuild_registry(store.model_dir)
    assert (report.entries_kept, report.entries_rebuilt) == ([10], [20])
    versions = read_manifest(store.model_dir)["versions"]
    assert versions["10"]["run_id"] == "run 10"
    assert versions["20"]["last_publish"] == "rebuilt" and versions["20"]["status"] == "published"
    assert versions["20"]["published_at"] and "run_id" not in versions["20"]


def test_rebuild_takes_labels_from_the_history_when_the_head_is_lost(store):
    """manifest.json gone: the labels are replayed from the history's label moves."""
    (store.model_dir / MANIFEST_FILE).unlink()
    assert rebuild_registry(store.model_dir).labels == {"canary": 20, "stable": 10}


def test_rebuild_marks_a_published_version_without_its_dir_deleted_and_drops_its_label(store):
    """Version 10's dir gone: its entry stays, deleted; `stable` pointing at it is dropped, not invented."""
    shutil.rmtree(store.model_dir / "10")
    report = rebuild_registry(store.model_dir)
    manifest = read_manifest(store.model_dir)
    assert manifest["versions"]["10"]["status"] == "deleted" and report.published == [20]
    assert manifest["labels"] == {"canary": 20}
    assert report.labels_dropped == ["stable -> 10 (not a published version on disk)"]


def test_rebuild_leaves_an_incomplete_dir_unregistered(store, tiny_export):
    """A version dir missing its variables is reported, not registered."""
    shutil.copytree(tiny_export, store.model_dir / "30")
    shutil.rmtree(store.model_dir / "30" / "variables")
    report = rebuild_registry(store.model_dir)
    assert "30" not in read_manifest(store.model_dir)["versions"]
    assert report.skipped and "variables/ is missing" in report.skipped[0]


def test_rebuild_replaces_an_entry_that_records_other_content(store):
    """An entry whose digest is not its dir's content is rebuilt from the dir."""
    _edit_json(store.model_dir / VERSIONS_DIR / "20.json", lambda d: d.update(content_digest="0" * 64))
    report = rebuild_registry(store.model_dir)
    assert report.entries_rebuilt == [20] and "000000000000" in report.damaged[0]


def test_rebuild_from_version_dirs_alone(tmp_path, tiny_export):
    """Versions copied by hand, no registry at all: registered, dated by their number, no label invented."""
    model_dir = tmp_path / "serving" / MODEL
    for version in (20261012000000, 20261013000000):
        shutil.copytree(tiny_export, model_dir / str(version))
    report = rebuild_registry(model_dir)
    manifest = read_manifest(model_dir)
    assert report.published == [20261012000000, 20261013000000] and manifest["labels"] == {}
    assert manifest["versions"]["20261013000000"]["logical_date"] == "2026-10-13T00:00:00+00:00"


def test_rebuild_drops_garbage_history_lines_and_records_itself(store):
    """Unreadable history lines are dropped, the rest kept, and a `rebuild` event appended."""
    path = store.model_dir / HISTORY_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    _edit_json(store.model_dir / MANIFEST_FILE, lambda d: d.update(history_bytes=d["history_bytes"] + 8))
    report = rebuild_registry(store.model_dir)
    history = read_manifest(store.model_dir)["history"]
    assert (report.history_kept, report.history_dropped) == (len(lines), 1)
    assert [e["event"] for e in history] == ["label"] * len(lines) + ["rebuild"]


def test_rebuild_backs_up_the_old_files_byte_for_byte(store):
    """The damaged files are copied into .manifest/before-rebuild-*/ before anything is rewritten."""
    (store.model_dir / MANIFEST_FILE).write_text('{"truncat')
    before = tree_state(store.model_dir / ".manifest" / "versions")
    report = rebuild_registry(store.model_dir)
    backup = Path(report.backup)
    assert backup.name.startswith(BACKUP_PREFIX)
    assert (backup / MANIFEST_FILE).read_text() == '{"truncat'
    assert tree_state(backup / "versions") == before


def test_rebuild_of_a_healthy_registry_keeps_everything(store):
    """On a registry that reads, the rebuild changes no entry and no label."""
    before = read_manifest(store.model_dir)
    rebuild_registry(store.model_dir)
    after = read_manifest(store.model_dir)
    assert after["versions"] == before["versions"] and after["labels"] == before["labels"]
    assert after["history"][:-1] == before["history"]


def test_rebuild_cli_then_versions(store, capsys):
    """`registry_cli rebuild` prints the report and rewrites models.config; `versions` works again."""
    (store.model_dir / MANIFEST_FILE).write_text("")
    assert registry_cli(["rebuild", str(store.model_dir)]) == 0
    out = capsys.readouterr().out
    assert "published versions: 10, 20" in out and "labels: canary=20, stable=10" in out
    assert f"rewrote {store.serving_root / 'models.config'}" in out
    assert registry_cli(["versions", str(store.model_dir)]) == 0


# --- registry tools refuse wrong targets, writing nothing -------------------------------------------


def _not_a_model_dir(store: Store) -> dict[str, tuple[Path, str]]:
    """Returns paths that are no model dir, each with the words its refusal must hold."""
    (store.serving_root / "notes.txt").write_text("not a model")
    (store.serving_root / "scratch").mkdir()
    (store.serving_root / "scratch" / "readme").write_text("random")
    (store.serving_root / "empty").mkdir()
    return {
        "a version dir": (store.model_dir / "10", "is a version dir"),
        "a serving root": (store.serving_root, "is a serving root"),
        "a random dir": (store.serving_root / "scratch", "holds no registry"),
        "an empty dir": (store.serving_root / "empty", "holds no registry"),
        "a file": (store.serving_root / "notes.txt", "is a file"),
        "a missing path in the model dir": (store.model_dir / "nope", "does not exist"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "a version dir",
        "a serving root",
        "a random dir",
        "an empty dir",
        "a file",
        "a missing path in the model dir",
    ],
)
def test_rebuild_refuses_what_is_no_model_dir_and_writes_nothing(case, store, capsys):
    """`rebuild` on anything but a model dir fails naming the path and what it expected; no byte changes."""
    path, words = _not_a_model_dir(store)[case]
    before = tree_state(store.serving_root.parent)
    assert registry_cli(["rebuild", str(path)]) != 0
    err = capsys.readouterr().err
    assert str(path) in err and words in err and "expected a model dir" in err
    assert tree_state(store.serving_root.parent) == before, "a refused rebuild changed the tree"
    assert_refused(lambda: rebuild_registry(path), RegistryError, store.serving_root, str(path), words)


def test_rebuild_refuses_an_unknown_name_that_is_no_path(store, capsys):
    """A name that is neither a path nor a pipeline is refused (exit 2) with nothing written."""
    before = tree_state(store.serving_root.parent)
    assert registry_cli(["rebuild", "no_such_pipeline_or_dir"]) == 2
    err = capsys.readouterr().err
    assert "no_such_pipeline_or_dir does not exist" in err and "expected a model dir" in err
    assert tree_state(store.serving_root.parent) == before


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (lambda s: s.model_dir, "is a model dir"),
        (lambda s: s.model_dir / "20", "is a version dir"),
        (lambda s: s.serving_root / "notes.txt", "is a file"),
        (lambda s: s.serving_root / "notes.txt" / "root", "cannot be created"),
    ],
    ids=["a model dir", "a version dir", "a file", "under a file"],
)
def test_models_config_refuses_what_is_no_serving_root_and_writes_nothing(target, words, store, capsys):
    """`models-config` on a model dir, a version dir or a file exits 1 naming it; no byte changes."""
    (store.serving_root / "notes.txt").write_text("not a root")
    path = target(store)
    before = tree_state(store.serving_root.parent)
    assert registry_cli(["models-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and words in err and "expected a serving root" in err
    assert tree_state(store.serving_root.parent) == before


def test_versions_shows_a_version_dir_deleted_by_hand_as_missing(store, capsys):
    """stable's dir deleted by hand: `versions` says missing, not published, and that stable is not served."""
    shutil.rmtree(store.model_dir / "10")
    assert registry_cli(["versions", str(store.model_dir)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("10 "))
    assert "missing" in row.split() and "published" not in row.split() and "stable" in row.split()
    assert "missing: published, but the version dir is gone" in out
    assert "labels kept in the registry but not served: stable=10" in out
    assert read_manifest(store.model_dir)["labels"]["stable"] == 10
