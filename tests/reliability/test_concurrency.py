"""Concurrency: many publishers of one model at once lose nothing; readers never see a torn manifest.

The readers read as the CLI and the UI do (`read_manifest`: the head, every entry, the committed
history) and as TF Serving does (`models.config`).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from include.registry.publish import publish_version
from include.registry.serving_config import MODELS_CONFIG_FILE
from include.registry.store import MANIFEST_FILE, read_manifest
from tests.helpers import assert_complete

PUBLISHERS = 8
ROUNDS = 3


def _publish(args) -> str:
    export, root, version = args
    return publish_version(export, root, "digits", version, record={"run_id": f"r{version}"}).status


def _read_until(stop, root: str, results) -> None:
    """Polls the manifest and models.config until `stop` is set; counts reads and bad reads.

    A read is bad if a file is torn, an entry is not whole, a label points at a version without a
    published entry, or a version seen before is gone (entries are only ever added).
    """
    model_dir = Path(root) / "digits"
    reads = bad = 0
    seen: set[str] = set()
    while not stop.is_set():
        if (model_dir / MANIFEST_FILE).exists():
            try:
                manifest = read_manifest(model_dir)
            except ValueError:
                bad += 1
                continue
            reads += 1
            versions = manifest["versions"]
            whole = all(e.get("status") == "published" and e.get("content_digest") for e in versions.values())
            labelled = all(str(v) in versions for v in manifest["labels"].values())
            bad += not (whole and labelled and seen <= set(versions))
            seen |= set(versions)
        try:
            text = (Path(root) / MODELS_CONFIG_FILE).read_text()
        except FileNotFoundError:
            continue
        reads += 1
        if not text.startswith("model_config_list {") or not text.rstrip().endswith("}"):
            bad += 1
    results.put((reads, bad))


def test_concurrent_publishers_and_readers(exported, tmp_path):
    """8 processes x 3 rounds publish new and repeated versions while 2 readers poll the files."""
    root = tmp_path / "serving"
    ctx = multiprocessing.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    readers = [ctx.Process(target=_read_until, args=(stop, str(root), results)) for _ in range(2)]
    for reader in readers:
        reader.start()
    expected: set[str] = set()
    statuses = []
    with ctx.Pool(PUBLISHERS) as pool:
        for round_ in range(ROUNDS):
            # Half the publishers publish a new version each, half repeat one from this round.
            versions = [round_ * 100 + i + 1 for i in range(PUBLISHERS // 2)] * 2
            expected |= {str(v) for v in versions}
            statuses += pool.map(_publish, [(str(exported), str(root), v) for v in versions])
    stop.set()
    for reader in readers:
        reader.join(60)
    reads = [results.get(timeout=10) for _ in readers]

    manifest = read_manifest(root / "digits")
    assert set(manifest["versions"]) == expected
    assert sorted(statuses).count("published") == len(expected)
    assert sorted(statuses).count("unchanged") == len(expected)
    for version in expected:
        assert_complete(root / "digits" / version)
    assert all(bad == 0 for _, bad in reads), reads
    assert sum(count for count, _ in reads) > 100  # the readers really raced the writers
