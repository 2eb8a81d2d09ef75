"""Training data: which partitions a run sees, the streaming held-out split, the fingerprint, no data.

Damaged data (bad records, files, links) is the hostile corpus of tests/reliability/test_hostile_data.py.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from include.config import DataConfig
from include.errors import DataError, NoDataError
from include.train.data import held_out, held_out_sample, input_dataset, read_sample, write_sample
from include.train.features import make_example
from include.train.training import train_model
from include.train.window import compression_of, data_window, partitions_as_of
from tests.helpers import (
    AFTER_ALL_DATA,
    SMALL_WINDOW_DATE,
    copy_data,
    example_values,
    read_records,
    record_offsets,
    small_window_config,
    write_records,
)
from tools.example_data import EXAMPLE_FIRST_DAY

TOTAL_EXAMPLES = 1797


def data_config(location, **changes) -> DataConfig:
    return DataConfig(location=location, **changes)


def names(partitions: list[Path]) -> list[str]:
    return [p.name for p in partitions]


def test_a_run_sees_only_partitions_before_its_date(example_data):
    """The partition of the run's own day is still being written, so it is left out."""
    chosen, skipped = partitions_as_of(data_config(example_data), dt.date(2026, 10, 4))
    assert names(chosen) == ["dt=2026-10-01", "dt=2026-10-02", "dt=2026-10-03"] and skipped == []


def test_window_days_limits_history(example_data):
    """window_days=2 keeps only the two days before the run's date."""
    chosen, _ = partitions_as_of(data_config(example_data, window_days=2), dt.date(2026, 10, 10))
    assert names(chosen) == ["dt=2026-10-08", "dt=2026-10-09"]


def test_no_data_before_the_first_partition_is_a_clear_error(example_data):
    """A run dated on or before the first day fails with NoDataError naming the date."""
    with pytest.raises(NoDataError, match="before 2026-10-01"):
        data_window(data_config(example_data), EXAMPLE_FIRST_DAY)


def test_missing_location_is_a_clear_error(tmp_path):
    """A data location that does not exist is reported as such."""
    with pytest.raises(NoDataError, match="does not exist"):
        data_window(data_config(tmp_path / "nowhere"), AFTER_ALL_DATA)


# --- the streaming split --------------------------------------------------------------------------


def held_out_ids(config, as_of: dt.date) -> list[int]:
    """Returns the ids of every held-out example of the window as of `as_of`, in file order."""
    window = data_window(config.data, as_of)
    sample = held_out_sample(config, window.files, 10**6)
    return [example_values(record)["id"][0] for record in sample]


def test_held_out_membership_is_a_stable_function_of_the_id():
    """The same ids give the same split on every call, as int64 or as their text; about 20% are held out."""
    ids = np.arange(20_000, dtype=np.int64)
    first = held_out(ids, 20).numpy()
    assert (held_out(ids, 20).numpy() == first).all()
    assert (held_out(np.array([str(i).encode() for i in ids]), 20).numpy() == first).all()
    assert (held_out(ids[::-1].copy(), 20).numpy() == first[::-1]).all()  # per id, not per position
    assert 0.18 < first.mean() < 0.22
    assert (first <= held_out(ids, 30).numpy()).all()  # a larger eval_percent only adds examples


def test_split_is_the_same_across_dates_and_held_out_examples_stay_held_out(session_config):
    """A later date's held-out set contains the earlier one's: exactly the held-out ones of the old ids."""
    early = held_out_ids(session_config, dt.date(2026, 10, 11))
    again = held_out_ids(session_config, dt.date(2026, 10, 11))
    later = held_out_ids(session_config, AFTER_ALL_DATA)
    assert early == again
    assert set(early) < set(later)
    early_files = data_window(session_config.data, dt.date(2026, 10, 11)).files
    early_ids = {example_values(r)["id"][0] for f in early_files for r in read_records(Path(f))}
    assert {i for i in later if i in early_ids} == set(early)
    assert 0.15 < len(later) / TOTAL_EXAMPLES < 0.25


def test_the_input_pipeline_streams_exactly_the_two_splits(session_config):
    """input_dataset's eval split holds the held-out examples and its train split all the others."""
    window = data_window(session_config.data, AFTER_ALL_DATA)
    held = held_out_sample(session_config, window.files, 10**6)
    held_rows = {np.asarray(example_values(r)["x"], np.float32).tobytes() for r in held}
    eval_rows, parsed = [], 0
    for features, label, count in input_dataset(
        session_config, window.files, "eval", batch_size=256, count=True
    ):
        eval_rows.extend(row.tobytes() for row in features["x"].numpy())
        parsed += int(count)
        assert ((label.numpy() >= 0) & (label.numpy() < 10)).all()
    train = sum(
        len(label) for _, label in input_dataset(session_config, window.files, "train", batch_size=50)
    )
    assert len(eval_rows) == len(held) and set(eval_rows) == held_rows
    assert parsed == window.records == TOTAL_EXAMPLES
    assert train + len(held) == TOTAL_EXAMPLES


def test_train_batches_are_full_and_epochs_repeat_the_split(session_config):
    """Train batches hold batch_size examples (the last may hold fewer); epochs=2 streams the split twice."""
    window = data_window(session_config.data, dt.date(2026, 10, 6))
    one = [len(label) for _, label in input_dataset(session_config, window.files, "train", batch_size=16)]
    two = [
        len(label)
        for _, label in input_dataset(session_config, window.files, "train", batch_size=16, epochs=2)
    ]
    assert all(size == 16 for size in one[:-1]) and 0 < one[-1] <= 16
    assert sum(two) == 2 * sum(one)


def test_stray_entries_are_skipped_and_reported(tmp_path, example_data):
    """A stray file, dt=2026-13-45 and _SUCCESS are skipped, never read, and named in `skipped`."""
    data = copy_data(example_data, tmp_path / "data")
    (data / "notes.txt").write_text("not a partition")
    (data / "_SUCCESS").write_text("")
    (data / "dt=2026-13-45").mkdir()
    (data / "dt=2026-13-45" / "part-00000.tfrecord").write_bytes(b"never read")
    (data / "dt=2026-10-02.tfrecord").write_bytes(b"a file, not a partition dir")
    (data / ".hidden").mkdir()
    chosen, skipped = partitions_as_of(data_config(data), AFTER_ALL_DATA)
    assert len(chosen) == 30
    assert sorted(skipped) == ["_SUCCESS", "dt=2026-10-02.tfrecord", "dt=2026-13-45", "notes.txt"]
    window = data_window(data_config(data), AFTER_ALL_DATA)
    assert sorted(window.skipped) == sorted(skipped)
    assert window.summary()["skipped"] == list(window.skipped)
    assert window.records == TOTAL_EXAMPLES and len(window.files) == 30
    assert window.fingerprint == data_window(data_config(example_data), AFTER_ALL_DATA).fingerprint


def test_an_empty_partition_is_reported_and_an_all_empty_window_is_no_data(tmp_path, example_data):
    """An empty partition is listed as empty, one of markers only as such; a window of them is NoDataError."""
    data = copy_data(example_data, tmp_path / "data")
    (data / "dt=2026-10-31").mkdir()
    (data / "dt=2026-11-01").mkdir()
    (data / "dt=2026-11-01" / "_SUCCESS").write_text("")
    (data / "dt=2026-11-01" / ".part-00000.tmp").write_bytes(b"half-written")
    window = data_window(data_config(data), dt.date(2026, 11, 2))
    assert window.skipped == (
        "dt=2026-10-31 (empty)",
        "dt=2026-11-01 (no data files, only .part-00000.tmp, _SUCCESS)",
    )
    assert window.partitions[-1] == "dt=2026-11-01" and len(window.files) == 30
    with pytest.raises(NoDataError, match=r"hold no data files"):
        data_window(data_config(data, window_days=2), dt.date(2026, 11, 2))


def test_fingerprint_changes_when_one_byte_changes(tmp_path, example_data):
    """The fingerprint is stable for the same bytes and changes when a single byte of one file does."""
    data = copy_data(example_data, tmp_path / "data")
    before = data_window(data_config(data), AFTER_ALL_DATA)
    assert data_window(data_config(data), AFTER_ALL_DATA) == before
    assert before.bytes == sum(Path(f).stat().st_size for f in before.files)
    file = data / "dt=2026-10-07" / "part-00000.tfrecord"
    offset, length = record_offsets(file)[10]
    content = bytearray(file.read_bytes())
    content[offset + 12 + length // 2] ^= 0x01  # inside a record's data: the framing still holds
    file.write_bytes(bytes(content))
    after = data_window(data_config(data), AFTER_ALL_DATA)
    assert after.fingerprint != before.fingerprint
    assert (after.files, after.bytes, after.records) == (before.files, before.bytes, before.records)
    # Each partition's own fingerprint: only the changed one's differs.
    changed = [
        name
        for name, old, new in zip(
            before.partitions, before.partition_fingerprints, after.partition_fingerprints, strict=True
        )
        if old != new
    ]
    assert changed == ["dt=2026-10-07"]
    assert len(set(before.partition_fingerprints)) == len(before.partitions)  # each its own bytes
    assert before.summary()["partition_fingerprints"]["dt=2026-10-07"] == before.partition_fingerprints[6]


def test_fingerprint_covers_file_names(tmp_path, example_data):
    """Renaming a file (same bytes) changes the fingerprint: it digests names and contents."""
    data = copy_data(example_data, tmp_path / "data")
    before = data_window(data_config(data), AFTER_ALL_DATA).fingerprint
    partition = data / "dt=2026-10-07"
    (partition / "part-00000.tfrecord").rename(partition / "part-00001.tfrecord")
    assert data_window(data_config(data), AFTER_ALL_DATA).fingerprint != before


# --- files found by content: any name, plain, GZIP or ZLIB ------------------------------------------


def write_compressed(file: Path, records: list[bytes], compression: str) -> Path:
    """Writes `records` as a TFRecord file with TensorFlow's own writer and `compression` ("", GZIP, ZLIB)."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(file), options=compression) as writer:
        for record in records:
            writer.write(record)
    return file


def one_day_as(tmp_path, example_data, layout: dict[str, str]) -> tuple[Path, list[bytes]]:
    """Returns (a copy of the data whose dt=2026-10-05 holds its records as {name: compression}, them)."""
    data = copy_data(example_data, tmp_path / "data")
    partition = data / "dt=2026-10-05"
    records = read_records(partition / "part-00000.tfrecord")
    (partition / "part-00000.tfrecord").unlink()
    for name, compression in layout.items():
        write_compressed(partition / name, records, compression)
    return data, records


def records_before(data: Path, as_of: dt.date) -> int:
    """Returns the number of records of the window of `data` as of `as_of`."""
    return data_window(data_config(data), as_of).records


def test_files_are_found_by_content_not_by_name(tmp_path, example_data):
    """Files without a .tfrecord suffix, GZIP and ZLIB ones are read; markers and hidden files are not."""
    from include.summary import data_read

    layout = {"part-00000": "", "part-00001.tfrecord.gz": "GZIP", "part-00002.deflate": "ZLIB"}
    data, records = one_day_as(tmp_path, example_data, layout)
    (data / "dt=2026-10-05" / "_SUCCESS").write_text("")
    (data / "dt=2026-10-05" / ".part-00003.crc").write_bytes(b"\x00checksums")
    window = data_window(data_config(data), AFTER_ALL_DATA)
    assert [Path(f).name for f in window.files if "dt=2026-10-05" in f] == sorted(layout)
    assert window.records == TOTAL_EXAMPLES + 2 * len(records) and window.skipped == ()
    summary = window.summary()
    assert summary["compressed_files"] == {"GZIP": 1, "ZLIB": 1}
    assert summary["files"] == 32 and summary["records"] == window.records
    assert data_read(summary) == f"32 files (1 GZIP, 1 ZLIB), {window.records:,} records"


def test_compressed_files_stream_the_same_examples_as_plain_ones(tmp_path, example_data, session_config):
    """The input pipeline reads a GZIP and a ZLIB copy of a partition as it reads the plain original."""
    data, records = one_day_as(tmp_path, example_data, {"a.gz": "GZIP", "b": "ZLIB", "c": ""})
    config = session_config.model_copy(update={"data": data_config(data)})
    window = data_window(config.data, dt.date(2026, 10, 6))
    parsed = sum(
        int(count) for *_, count in input_dataset(config, window.files, "eval", batch_size=64, count=True)
    )
    assert parsed == window.records == records_before(example_data, dt.date(2026, 10, 6)) + 2 * len(records)
    sample = held_out_sample(config, window.files, 10**6)
    gz, zl, plain = (held_out_sample(config, [f], 10**6) for f in window.files[-3:])
    assert gz == zl == plain and set(plain) <= set(sample)


def test_a_plain_file_whose_first_bytes_look_like_zlib_is_plain(tmp_path):
    """A record of 40,056 bytes starts the file with 78 9c (a zlib header): the record checksum decides."""
    file = write_compressed(tmp_path / "part-00000", [b"x" * 0x9C78, b"y"], "")
    head = file.read_bytes()
    assert head[:2] == b"\x78\x9c" and compression_of(head[:4096], str(file)) == ""
    assert compression_of(write_compressed(tmp_path / "z", [b"x"], "ZLIB").read_bytes(), "z") == "ZLIB"
    assert compression_of(write_compressed(tmp_path / "g", [], "GZIP").read_bytes(), "g") == "GZIP"
    assert compression_of(b"", "empty") == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"date,label\n2026-10-05,3\n" * 20, "not a TFRecord file: it starts with 64 61 74 65"),
        (b"PAR1" + bytes(200), "not a TFRecord file: it starts with 50 41 52 31"),
        (__import__("gzip").compress(b"a,b\n1,2\n" * 50), "a GZIP file, but not of TFRecords"),
        (b"\x1f\x8b" + bytes(100), "it starts like GZIP data (1f 8b) but does not decompress"),
    ],
    ids=["csv", "parquet", "gzipped csv", "gzip magic, garbage"],
)
def test_a_file_that_is_not_a_tfrecord_is_named(tmp_path, example_data, content, fragment):
    """A partition file of other content fails the window with a permanent DataError naming it."""
    data = copy_data(example_data, tmp_path / "data")
    stray = data / "dt=2026-10-05" / "part-00001"
    stray.write_bytes(content)
    with pytest.raises(DataError) as info:
        data_window(data_config(data), AFTER_ALL_DATA)
    assert info.value.path == str(stray) and info.value.permanent and fragment in str(info.value)


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_a_compressed_file_cut_short_is_named_though_tensorflow_reads_on(tmp_path, example_data, compression):
    """TensorFlow reads a cut GZIP or ZLIB file as ending early; the window refuses it, naming the file."""
    import tensorflow as tf

    data, records = one_day_as(tmp_path, example_data, {"part-00000.z": compression})
    file = data / "dt=2026-10-05" / "part-00000.z"
    file.write_bytes(file.read_bytes()[: file.stat().st_size * 2 // 3])
    try:
        read = sum(1 for _ in tf.data.TFRecordDataset(str(file), compression_type=compression))
    except tf.errors.DataLossError:
        read = None
    assert read is None or read < len(records)
    with pytest.raises(DataError, match=f"truncated {compression} file") as info:
        data_window(data_config(data), AFTER_ALL_DATA)
    assert info.value.path == str(file) and 0 < info.value.record < len(records)


def test_gzip_members_one_after_the_other_are_all_counted(tmp_path, example_data):
    """Two GZIP members in one file: TensorFlow reads both, and the window counts both."""
    data, records = one_day_as(tmp_path, example_data, {"part-00000.gz": "GZIP"})
    file = data / "dt=2026-10-05" / "part-00000.gz"
    file.write_bytes(file.read_bytes() * 2)
    window = data_window(data_config(data), dt.date(2026, 10, 6))
    assert window.records == records_before(example_data, dt.date(2026, 10, 6)) + len(records)
    assert read_records_of(file, "GZIP") == 2 * len(records)


def read_records_of(file: Path, compression: str) -> int:
    """Returns how many records TensorFlow reads from a file of that compression."""
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(str(file), compression_type=compression))


def test_directories_and_fifos_in_a_partition_are_skipped_and_listed(tmp_path, example_data):
    """A sub-directory or a FIFO beside the data files is not read (a FIFO would block) and is listed."""
    data = copy_data(example_data, tmp_path / "data")
    (data / "dt=2026-10-05" / "nested").mkdir()
    os.mkfifo(data / "dt=2026-10-05" / "pipe")
    window = data_window(data_config(data), AFTER_ALL_DATA)
    assert window.skipped == (
        "dt=2026-10-05/nested (a directory, not read)",
        "dt=2026-10-05/pipe (not a regular file, not read)",
    )
    assert window.records == TOTAL_EXAMPLES


def test_eval_sample_round_trips_through_json(tmp_path):
    """write_sample / read_sample keep serialized examples byte for byte (base64 in JSON)."""
    examples = [make_example({"x": [0.5] * 64, "label": 3, "id": 7}), b"\x00\xff raw"]
    write_sample(tmp_path / "eval_sample.json", examples)
    assert read_sample(tmp_path / "eval_sample.json") == examples


# --- no data: an empty window, an empty split ------------------------------------------------------


def test_an_empty_window_is_no_data_through_training(tmp_path, example_data):
    """Training dated on the first day (no partition before it) fails with NoDataError."""
    config = small_window_config(tmp_path, example_data)
    with pytest.raises(NoDataError, match=r"no data partitions .* before 2026-10-01"):
        train_model(config, EXAMPLE_FIRST_DAY, tmp_path / "work")


def one_split_data(root: Path, *, held: bool) -> Path:
    """Returns a data location of one partition whose 40 examples are all held out (or all train)."""
    ids = np.arange(1000)
    chosen = ids[held_out(ids, 20).numpy() == held][:40]
    partition = root / "data" / "dt=2026-10-16"
    partition.mkdir(parents=True)
    write_records(
        partition / "part-00000.tfrecord",
        [make_example({"x": [i / 1000] * 64, "label": int(i % 10), "id": int(i)}) for i in chosen],
    )
    return root / "data"


@pytest.mark.parametrize("epochs", [1, None], ids=["epochs", "steps"])
def test_an_empty_train_split_is_no_data(tmp_path, epochs):
    """A window whose examples are all held out fails with NoDataError, by epochs and by steps (no hang)."""
    config = small_window_config(tmp_path, one_split_data(tmp_path, held=True))
    steps = None if epochs else 20
    with pytest.raises(NoDataError, match=r"the train split (of .* )?is empty"):
        train_model(config, SMALL_WINDOW_DATE, tmp_path / "work", steps=steps)


def test_an_empty_held_out_split_is_no_data(tmp_path):
    """A window whose examples all fall in the train split fails with NoDataError naming the split."""
    config = small_window_config(tmp_path, one_split_data(tmp_path, held=False))
    with pytest.raises(NoDataError, match=r"the held-out split of dt=2026-10-16 .. dt=2026-10-16 is empty"):
        train_model(config, SMALL_WINDOW_DATE, tmp_path / "work")


def test_train_order_is_seeded_and_new_each_epoch(session_config):
    """The train input's order is the same on every pass of the same config, and differs between epochs."""
    window = data_window(session_config.data, AFTER_ALL_DATA)

    def labels() -> list[int]:
        batches = input_dataset(session_config, window.files, "train", batch_size=50, epochs=2)
        return [int(value) for _, label in batches for value in label.numpy()]

    first = labels()
    assert labels() == first
    half = len(first) // 2
    assert first[:half] != first[half:] and sorted(first[:half]) == sorted(first[half:])
