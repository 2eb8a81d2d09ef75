"""A full disk (RLIMIT_FSIZE) fails export and publish cleanly: no partial version, served ones untouched."""

from __future__ import annotations

import multiprocessing
import resource
import signal

from include.registry.publish import publish_version
from include.registry.store import STAGING_DIR
from include.savedmodel.files import content_digest
from include.versions import is_version_name

LIMIT_BYTES = 4096  # smaller than saved_model.pb: the copy must fail part-way


def _publish_with_tiny_disk(export: str, root: str, queue) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))
    try:
        publish_version(export, root, "digits", 20, record={"run_id": "tiny disk"})
        queue.put("published")
    except Exception as err:
        queue.put(f"{type(err).__name__}: {err}")


def _export_with_tiny_disk(config_path: str, checkpoint: str, target: str, queue) -> None:
    from include.config import load_pipeline_config
    from include.savedmodel.export import export_savedmodel

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))
    try:
        export_savedmodel(load_pipeline_config(config_path), checkpoint, target)
        queue.put("exported")
    except Exception as err:
        queue.put(f"{type(err).__name__}: {err}")


def run_in_child(target, *args) -> str:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    process.join(300)
    return queue.get(timeout=10)


def test_publish_onto_a_full_disk_fails_cleanly(exported, tmp_path):
    """The copy fails with 'File too large', no version 20 appears, version 10 keeps its bytes."""
    root = tmp_path / "serving"
    publish_version(exported, root, "digits", 10)
    served = content_digest(root / "digits" / "10")
    outcome = run_in_child(_publish_with_tiny_disk, str(exported), str(root))
    assert outcome.startswith("StorageError") and "File too large" in outcome, outcome
    names = sorted(p.name for p in (root / "digits").iterdir())
    assert [n for n in names if is_version_name(n)] == ["10"]
    assert not list((root / "digits" / STAGING_DIR).iterdir())
    assert content_digest(root / "digits" / "10") == served
    assert publish_version(exported, root, "digits", 20).status == "published"  # space back: works


def test_export_onto_a_full_disk_fails_cleanly(session_config, trained, tmp_path):
    """SavedModelBuilder hitting the limit fails with a clear error and leaves no export dir."""
    target = tmp_path / "exports" / "20"
    outcome = run_in_child(
        _export_with_tiny_disk, str(session_config.source_path), trained.checkpoint, str(target)
    )
    assert outcome != "exported"
    assert "File too large" in outcome or "too large" in outcome.lower(), outcome
    assert outcome.startswith("StorageError"), outcome
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary export dir is gone too
