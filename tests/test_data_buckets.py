"""Training data in a bucket (fake-gcs-server and moto's S3): listed from metadata, streamed, as local.

The example data is uploaded to each emulator and read beside its local copy: the same files, the
same records in the same order, the same held-out split and the same trained model; damaged
objects are named in a DataError as damaged files are.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from include.config import DataConfig, load_pipeline_config
from include.errors import DataError
from include.storage import objects
from include.storage.location import BucketURI
from include.train.data import diagnose, held_out_sample, input_dataset
from include.train.training import train_model
from include.train.window import data_window, partitions_as_of, stream_records
from tests.buckets import GCS_CONN, S3_CONN
from tests.helpers import AFTER_ALL_DATA, copy_data, make_raw, read_records, write_pipeline

TOTAL_EXAMPLES = 1797


def upload(data: Path, bucket: str, name: str = "digits") -> BucketURI:
    """Uploads a data location's files (dot files too) below `bucket/name`; returns that prefix."""
    prefix = BucketURI(bucket) / name
    objects.upload_tree(data, prefix)
    return prefix


def pipeline(root: Path, location, bucket: str | None = None, **training):
    """Returns the example config reading `location` (deterministic), with the bucket's connection."""
    raw = make_raw(root, location)
    if bucket is not None:
        raw["data"]["connection"] = GCS_CONN if bucket.startswith("gs://") else S3_CONN
    raw["training"].update(training)
    name = "bucket" if bucket else "local"
    return load_pipeline_config(write_pipeline(root / "pipelines", raw, f"{name}.yaml"))


def relative(files, root) -> list[str]:
    return [str(f)[len(str(root)) + 1 :] for f in files]


def write_compressed(file: Path, records: list[bytes], compression: str) -> Path:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(file), options=compression) as writer:
        for record in records:
            writer.write(record)
    return file


def test_a_bucket_window_lists_the_same_partitions_and_files_as_the_local_copy(bucket, example_data):
    prefix = upload(example_data, bucket)
    local = data_window(DataConfig(location=example_data), AFTER_ALL_DATA)
    remote = data_window(DataConfig(location=prefix), AFTER_ALL_DATA)
    assert remote.partitions == local.partitions and remote.skipped == local.skipped == ()
    assert relative(remote.files, prefix) == relative(local.files, example_data)
    assert remote.bytes == local.bytes and remote.compressed == local.compressed == ()
    assert len(remote.fingerprint) == 64 and remote.fingerprint != local.fingerprint
    # Only listed, nothing read yet: the records are not known (see DataWindow.records).
    assert remote.records is None and local.records == TOTAL_EXAMPLES
    for days in (0, 2):
        as_of = dt.date(2026, 10, 10)
        limit = {"window_days": days} if days else {}
        chosen, skipped = partitions_as_of(DataConfig(location=prefix, **limit), as_of)
        expected, _ = partitions_as_of(DataConfig(location=example_data, **limit), as_of)
        assert [p.name for p in chosen] == [p.name for p in expected] and skipped == []
    for batch in (b for file in remote.files for b in stream_records(file)):
        assert batch
    assert remote.records == TOTAL_EXAMPLES  # every file read whole once: counted


def test_the_fingerprint_is_stable_and_follows_an_object_rewritten_at_the_same_size(bucket, example_data):
    prefix = upload(example_data, bucket)
    config = DataConfig(location=prefix)
    first = data_window(config, AFTER_ALL_DATA)
    assert data_window(config, AFTER_ALL_DATA) == first
    target = BucketURI(first.files[4])
    original = objects.read_bytes(target)
    changed = bytearray(original)
    changed[40] ^= 0xFF  # same size, other bytes
    objects.write(target, bytes(changed))
    after = data_window(config, AFTER_ALL_DATA)
    assert after.bytes == first.bytes and after.fingerprint != first.fingerprint
    partition = next(p for p in first.partitions if f"/{p}/" in first.files[4])  # only its own changed
    pairs = zip(first.partition_fingerprints, after.partition_fingerprints, strict=True)
    changed = {name for name, (old, new) in zip(first.partitions, pairs, strict=True) if old != new}
    assert changed == {partition}
    # The fingerprint is of content (the store's MD5): the same bytes again give the first one back.
    objects.write(target, original)
    assert data_window(config, AFTER_ALL_DATA).fingerprint == first.fingerprint


def test_hidden_objects_markers_and_strays_are_skipped_as_local_files_are(bucket, example_data, tmp_path):
    data = copy_data(example_data, tmp_path / "data")
    (data / "dt=2026-10-05" / "_SUCCESS").write_text("")
    (data / "dt=2026-10-05" / ".part-00001.crc").write_bytes(b"\x00checksums")
    (data / "dt=2026-10-06" / "nested").mkdir()
    (data / "dt=2026-10-06" / "nested" / "part-00000").write_bytes(b"not read")
    (data / "_SUCCESS").write_text("")
    (data / "README").write_text("stray")
    (data / "dt=2026-10-40").mkdir()
    (data / "dt=2026-10-40" / "part-00000").write_bytes(b"not a date")
    (data / "dt=2026-11-05").mkdir()
    (data / "dt=2026-11-05" / "_SUCCESS").write_text("")  # nothing but a marker
    prefix = upload(data, bucket)
    local = data_window(DataConfig(location=data), dt.date(2026, 11, 6))
    remote = data_window(DataConfig(location=prefix), dt.date(2026, 11, 6))
    assert relative(remote.files, prefix) == relative(local.files, data)
    assert remote.skipped == local.skipped
    assert set(remote.skipped) == {
        "README",
        "_SUCCESS",
        "dt=2026-10-40",
        "dt=2026-10-06/nested (a directory, not read)",
        "dt=2026-11-05 (no data files, only _SUCCESS)",
    }


def test_compressed_objects_read_the_same_records_as_local_files(bucket, example_data, tmp_path):
    data = copy_data(example_data, tmp_path / "data")
    partition = data / "dt=2026-10-05"
    records = read_records(partition / "part-00000.tfrecord")
    (partition / "part-00000.tfrecord").unlink()
    layout = {"a.tfrecord.gz": "GZIP", "b.deflate": "ZLIB", "c": ""}
    for name, compression in layout.items():
        write_compressed(partition / name, records, compression)
    prefix = upload(data, bucket)
    window = data_window(DataConfig(location=prefix), dt.date(2026, 10, 6))
    assert dict(window.compressed) == {"GZIP": 1, "ZLIB": 1}
    for name in layout:
        streamed = [r for batch in stream_records(prefix / "dt=2026-10-05" / name) for r in batch]
        assert streamed == records
    config = pipeline(tmp_path, prefix, bucket)
    local_config = pipeline(tmp_path / "local", data)
    local = data_window(local_config.data, dt.date(2026, 10, 6))
    assert held_out_sample(config, window.files, 10**6) == held_out_sample(local_config, local.files, 10**6)
    assert window.records == local.records


def batches_of(config, files, split: str, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (features["x"].numpy(), label.numpy())
        for features, label in input_dataset(config, files, split, batch_size=64, **kwargs)
    ]


def test_the_input_from_a_bucket_is_the_local_input_in_the_same_order(bucket, example_data, tmp_path):
    prefix = upload(example_data, bucket)
    config, local_config = pipeline(tmp_path, prefix, bucket), pipeline(tmp_path / "local", example_data)
    remote = data_window(config.data, AFTER_ALL_DATA)
    local = data_window(local_config.data, AFTER_ALL_DATA)
    for split in ("train", "eval"):
        ours, theirs = batches_of(config, remote.files, split), batches_of(local_config, local.files, split)
        assert len(ours) == len(theirs) > 0
        for (x, label), (x_local, label_local) in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(x, x_local)
            np.testing.assert_array_equal(label, label_local)
    # Two epochs: the second pass reshuffles alike.
    for ours, theirs in zip(
        batches_of(config, remote.files, "train", epochs=2),
        batches_of(local_config, local.files, "train", epochs=2),
        strict=True,
    ):
        np.testing.assert_array_equal(ours[0], theirs[0])
    assert held_out_sample(config, remote.files, 10**6) == held_out_sample(local_config, local.files, 10**6)


def test_a_truncated_object_is_named_in_a_data_error(bucket, example_data, tmp_path):
    data = copy_data(example_data, tmp_path / "data")
    file = data / "dt=2026-10-05" / "part-00000.tfrecord"
    file.write_bytes(file.read_bytes()[: file.stat().st_size * 2 // 3])
    prefix = upload(data, bucket)
    cut = str(prefix / "dt=2026-10-05" / "part-00000.tfrecord")
    config = pipeline(tmp_path, prefix, bucket, steps=5)
    window = data_window(config.data, AFTER_ALL_DATA)  # listing reads no data: not found here
    with pytest.raises(DataError, match="truncated TFRecord file") as info:
        diagnose(config, window.files)
    assert info.value.path == cut and info.value.record > 0
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match=cut):
        for _ in input_dataset(config, window.files, "eval", batch_size=64):
            pass
    with pytest.raises(DataError, match="truncated TFRecord file") as info:
        train_model(config, AFTER_ALL_DATA, tmp_path / "work")
    assert info.value.path == cut


def test_an_object_changed_since_the_window_was_listed_is_refused(bucket, example_data):
    prefix = upload(example_data, bucket)
    window = data_window(DataConfig(location=prefix), AFTER_ALL_DATA)
    target = BucketURI(window.files[0])
    changed = bytearray(objects.read_bytes(target))
    changed[40] ^= 0xFF
    objects.write(target, bytes(changed))
    with pytest.raises(DataError, match="changed since the data window was listed"):
        list(stream_records(target))


def test_training_from_a_bucket_gives_the_local_run_s_metrics(bucket, example_data, tmp_path):
    prefix = upload(example_data, bucket)
    local = train_model(pipeline(tmp_path / "local", example_data), AFTER_ALL_DATA, tmp_path / "l", steps=60)
    remote = train_model(pipeline(tmp_path, prefix, bucket), AFTER_ALL_DATA, tmp_path / "b", steps=60)
    # The same examples in the same order and the same seed: the same model, bit for bit.
    speed = ("examples_per_second", "train_seconds")
    assert {k: v for k, v in remote.metrics.items() if k not in speed} == {
        k: v for k, v in local.metrics.items() if k not in speed
    }
    assert remote.data["records"] == local.data["records"] == TOTAL_EXAMPLES
    assert remote.data["eval_examples"] == local.data["eval_examples"]
    assert remote.data["files"] == local.data["files"] and remote.data["bytes"] == local.data["bytes"]
