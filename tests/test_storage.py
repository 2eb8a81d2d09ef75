"""The storage layer against real emulators: conditional writes, verified uploads, the lease."""

from __future__ import annotations

import threading

import pytest

from include.errors import StorageError
from include.storage import objects
from include.storage.location import BucketURI, location, scheme_problem


def test_a_location_is_a_path_or_a_bucket_uri():
    assert location("gs://models-bucket/a/b") == BucketURI("gs://models-bucket/a/b/")
    assert location("gs://models-bucket/a") / "digits" / "1" == "gs://models-bucket/a/digits/1"
    assert BucketURI("s3://models-bucket/a/b").parent == "s3://models-bucket/a"
    assert BucketURI("s3://models-bucket/a/b").name == "b"
    assert str(location("build/x")) == "build/x"
    assert "known: gs://, s3://" in scheme_problem("hdfs://x/y")
    assert "not a bucket name" in scheme_problem("gs://UPPER/x")


def test_conditional_writes_refuse_a_stale_writer(bucket):
    head = BucketURI(bucket) / "model" / "manifest.json"
    first = objects.write(head, b"one", if_absent=True)
    with pytest.raises(objects.PreconditionFailed):
        objects.write(head, b"two", if_absent=True)
    second = objects.write(head, b"two", if_token=first)
    with pytest.raises(objects.PreconditionFailed):
        objects.write(head, b"three", if_token=first)  # read before `second`: refused
    assert objects.read(head) == (b"two", second)


def test_of_writers_racing_on_one_token_exactly_one_wins(bucket):
    head = BucketURI(bucket) / "race.json"
    token = objects.write(head, b"0")
    outcomes = []
    barrier = threading.Barrier(6)

    def writer(n):
        barrier.wait()
        try:
            objects.write(head, str(n).encode(), if_token=token)
            outcomes.append(("won", n))
        except objects.PreconditionFailed:
            outcomes.append(("lost", n))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for outcome, n in outcomes if outcome == "won"]
    assert len(winners) == 1 and objects.read_bytes(head) == str(winners[0]).encode()


def test_an_upload_is_verified_and_a_tree_puts_its_last_file_last(bucket, tmp_path):
    tree = tmp_path / "version"
    (tree / "variables").mkdir(parents=True)
    (tree / "variables" / "variables.index").write_bytes(b"i" * 1000)
    (tree / "saved_model.pb").write_bytes(b"p" * 10)
    prefix = BucketURI(bucket) / "m" / "1"
    stats = objects.upload_tree(tree, prefix, last=["saved_model.pb"])
    assert [s.uri.name for s in stats] == ["variables.index", "saved_model.pb"]
    assert [s.size for s in stats] == [1000, 10]
    assert objects.children(BucketURI(bucket) / "m") == ["1"]
    assert sorted(p.name for p in objects.download_tree(prefix, tmp_path / "back")) == [
        "saved_model.pb",
        "variables.index",
    ]


def test_a_lease_is_exclusive_renewed_and_taken_over_once_expired(bucket):
    lock = BucketURI(bucket) / "m" / ".lock"
    with objects.leased(lock, ttl=2.0):
        with pytest.raises(StorageError, match="is held by"):
            objects.Lease(lock, wait=0.5).acquire()
    assert objects.stat(lock) is None  # released
    crashed = objects.Lease(lock, ttl=0.5)
    crashed.acquire()
    crashed._stop.set()  # a holder that stops renewing (killed)
    crashed._thread.join()
    with objects.leased(lock, ttl=2.0, wait=10):  # taken over once it expired
        pass
