"""Concurrency: many publishers of one model at once lose nothing; readers never see a torn manifest.

The readers read as the CLI and the UI do (`read_manifest`: the head, every entry, the committed
history) and as TF Serving does (`models.config`).

The same race runs against a bucket on each emulator (fake-gcs-server, moto's S3), with a process
moving the `stable` label meanwhile: the publishers take turns under the model dir's lease and
commit the head conditionally; every reader is its own process, as every host would be.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from include.registry.publish import publish_version
from include.registry.serving_config import MODELS_CONFIG_FILE
from include.registry.store import MANIFEST_FILE, read_manifest
from include.storage import objects
from include.storage.location import BucketURI
from tests.buckets import GCS_CONN, S3_CONN
from tests.helpers import assert_complete

PUBLISHERS = 8
ROUNDS = 3
#: In a bucket each publish takes the lease in turn (a few tenths of a second on the emulators).
BUCKET_PUBLISHERS = 4
BUCKET_ROUNDS = 2


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


def _bind(bucket: str) -> None:
    """Binds the bucket's test connection in a spawned process (its AIRFLOW_CONN_* are inherited)."""
    from include.storage.connections import use_connection

    use_connection(bucket, GCS_CONN if BucketURI(bucket).scheme == "gs" else S3_CONN)


def _read_bucket_until(stop, bucket: str, results) -> None:
    """Polls the manifest and models.config in a bucket until `stop` is set; returns reads, bad reads.

    A read is bad if it raises (a torn or unreadable object), an entry is not whole, a label points
    at a version without a published entry, a version seen before is gone, or models.config labels
    a version it does not serve. Each bad read is returned with what was wrong.
    """
    from include.registry.serving_config import read_models_config

    _bind(bucket)
    root = BucketURI(bucket) / "serving"
    reads = 0
    bad: list[str] = []
    seen: set[str] = set()
    while not stop.is_set():
        time.sleep(0.005)  # two cores serve the publishers, the emulators and the readers alike
        try:
            manifest = read_manifest(root / "digits")
            versions = manifest["versions"]
            if not all(e.get("status") == "published" and e.get("content_digest") for e in versions.values()):
                bad.append(f"an entry is not whole: {versions}")
            if not all(str(v) in versions for v in manifest["labels"].values()):
                bad.append(f"labels {manifest['labels']} name a version without an entry")
            if not seen <= set(versions):
                bad.append(f"versions {sorted(seen - set(versions))} were seen, then gone")
            seen |= set(versions)
            reads += 1
            config = read_models_config(root)
            for model in config.model_config_list.config if config else []:
                served = set(model.model_version_policy.specific.versions)
                if served and not set(model.version_labels.values()) <= served:
                    bad.append(f"models.config labels {dict(model.version_labels)}, serves {sorted(served)}")
            reads += config is not None
        except Exception as err:  # a reader must never fail: count it, say why
            bad.append(f"{type(err).__name__}: {err}")
    results.put((reads, bad))


def _move_stable(stop, bucket: str, results) -> None:
    """Moves `stable` between published versions until `stop` is set; returns the moves that committed."""
    from include.registry.policy import set_label
    from include.registry.serving_config import write_models_config
    from include.registry.store import published_versions

    _bind(bucket)
    root = BucketURI(bucket) / "serving"
    moves: list[int] = []
    errors: list[str] = []
    while not stop.is_set():
        time.sleep(0.005)
        try:
            published = published_versions(read_manifest(root / "digits"))
            if not published:
                time.sleep(0.05)
                continue
            target = published[len(moves) % len(published)]
            set_label(root / "digits", "stable", target, by="mover", reason=f"move {len(moves)}")
            moves.append(target)
            write_models_config(root)  # what promote does after the move (minus loading the version)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    results.put((moves, errors))


def _publish_to_bucket(args) -> str:
    export, bucket, version = args
    _bind(bucket)
    root = BucketURI(bucket) / "serving"
    return publish_version(export, root, "digits", version, record={"run_id": f"r{version}"}).status


def test_concurrent_publishers_readers_and_a_label_mover_in_a_bucket(exported, bucket):
    """4 processes x 2 rounds publish new and repeated versions to a bucket, one process moves
    `stable`, 2 readers poll: nothing lost, no torn read, no reader error."""
    from tests.reliability.bucket_checks import check_bucket, export_sizes, locks_of

    root = BucketURI(bucket) / "serving"
    ctx = multiprocessing.get_context("spawn")
    results, moved, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    readers = [ctx.Process(target=_read_bucket_until, args=(stop, bucket, results)) for _ in range(2)]
    mover = ctx.Process(target=_move_stable, args=(stop, bucket, moved))
    for process in [*readers, mover]:
        process.start()
    expected: set[str] = set()
    statuses = []
    with ctx.Pool(BUCKET_PUBLISHERS, initializer=_bind, initargs=(bucket,)) as pool:
        for round_ in range(BUCKET_ROUNDS):
            versions = [round_ * 100 + i + 1 for i in range(BUCKET_PUBLISHERS // 2)] * 2
            expected |= {str(v) for v in versions}
            statuses += pool.map(_publish_to_bucket, [(str(exported), bucket, v) for v in versions])
    stop.set()
    moves, move_errors = moved.get(timeout=60)
    reads = [results.get(timeout=60) for _ in readers]
    for process in [*readers, mover]:
        process.join(60)

    model_dir = root / "digits"
    manifest = read_manifest(model_dir)
    assert set(manifest["versions"]) == expected
    assert sorted(statuses).count("published") == len(expected)
    assert sorted(statuses).count("unchanged") == len(expected)
    assert check_bucket(model_dir, export_sizes(exported)) == []  # every version whole, registry reads
    assert manifest["labels"]["canary"] == max(int(v) for v in expected)
    assert moves, move_errors
    by_mover = [e["version"] for e in manifest["history"] if e.get("by") == "mover"]
    assert by_mover == moves  # every committed move recorded, in order, none lost to a publish
    assert manifest["labels"]["stable"] == moves[-1]
    assert [lock for lock in locks_of(model_dir) if objects.stat(lock) is not None] == []
    assert sum(count for count, _ in reads) > 20  # the readers really raced the writers
    # Every read whole and parsed, none torn by an object replaced while it was read (registry
    # objects are read in one GET, never through a file object: include/registry/store.py).
    assert [problem for _, found in reads for problem in found] + move_errors == []
