"""Hostile training data: every damaged partition fails the run at once, named, and publishes nothing.

Each case damages a copy of the example data (one record, one file, a link, a stray entry) and
runs the `train` step of a real run record against a model store that already serves a version.
A refused run raises a permanent error (the Airflow task fails without a retry; the e2e test
tests/e2e/test_keras_regression.py shows it through Airflow) naming the partition file and,
where it applies, the record and the feature; the serving tree is byte for byte what it was.
Entries that are not data (stray names, links out of the data location, hidden temp files) are
skipped and listed in the lineage, never fatal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest

from include.errors import DataError
from include.run.record import RunIdentity, start_run
from include.run.steps import train_run
from include.train.data import diagnose, example_problem, input_dataset
from include.train.features import make_example
from include.train.training import CHECKPOINT_DIR, train_model
from include.train.window import data_window
from include.versions import runs_dir
from tests.helpers import (
    DAMAGED_DAY,
    SMALL_WINDOW_DATE,
    copy_data,
    example_values,
    leftovers,
    publish_digits,
    read_records,
    record_offsets,
    small_window_config,
    split_indexes,
    write_records,
)

SERVED_VERSION = 10


def tree_digest(root: Path) -> str:
    """Returns a SHA-256 over every file's path and bytes (and every directory's path) under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_train(config, as_of: dt.date = SMALL_WINDOW_DATE) -> dict:
    """Runs the `train` step of a new run record of `config`, dated `as_of`, as the DAG's task does."""
    logical_date = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    run = RunIdentity(config.name, f"manual__{logical_date.isoformat()}", "manual", logical_date.isoformat())
    runs = runs_dir(config.storage.export_root, config.model.name)
    return train_run(start_run(config.source_path, runs, run, {}, logical_date, logical_date))


# --- bad data: DataError naming the file, the record and the feature -------------------------------


@pytest.fixture
def damaged(tmp_path, example_data, exported):
    """Returns (config over 4 partitions of a copy of the data, the file of the partition to damage).

    Its serving root already serves version 10, so a refused run can be seen to leave it alone.
    """
    data = copy_data(example_data, tmp_path / "data")
    config = small_window_config(tmp_path, data)
    publish_digits(exported, config.storage.serving_root, SERVED_VERSION)
    return config, data / DAMAGED_DAY / "part-00000.tfrecord"


def replace_record(file: Path, index: int, change) -> None:
    """Rewrites record `index` of `file` as make_example(change(values)), or change's bytes."""
    records = read_records(file)
    changed = change(example_values(records[index]))
    records[index] = changed if isinstance(changed, bytes) else make_example(changed)
    write_records(file, records)


def assert_refused(config, file: Path, record: int | None, *fragments: str) -> DataError:
    """Asserts the run's train step fails with a permanent DataError naming `file`, `record` and each
    fragment; no checkpoint is left and the serving tree is unchanged."""
    serving = config.storage.serving_root
    before = tree_digest(serving)
    with pytest.raises(DataError) as info:
        run_train(config)
    error = info.value
    assert error.permanent  # fail_fast_on_permanent_errors: AirflowFailException, no retry
    assert error.path == str(file) and error.record == record, str(error)
    message = str(error)
    assert str(file) in message and (record is None or f"record {record}" in message)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    runs = runs_dir(config.storage.export_root, config.model.name)
    assert not list(runs.glob(f"*/{CHECKPOINT_DIR}")) and leftovers(runs) == []
    assert tree_digest(serving) == before
    return error


def without(values: dict, key: str) -> dict:
    return {k: v for k, v in values.items() if k != key}


def with_value(values: dict, key: str, value) -> dict:
    return {**values, key: value}


def nan_at(values: dict, position: int) -> dict:
    x = list(values["x"])
    x[position] = math.nan
    return with_value(values, "x", x)


#: (case, which split the damaged record is in, change of its values, fragments of the DataError)
BAD_RECORDS = [
    ("missing feature", "train", lambda v: without(v, "x"), ["feature 'x' is missing (expected 64 float32"]),
    ("missing label", "train", lambda v: without(v, "label"), ["feature 'label' is missing"]),
    ("missing id", "held", lambda v: without(v, "id"), ["feature 'id' is missing"]),
    (
        "wrong dtype",
        "train",
        lambda v: with_value(v, "x", [round(f) for f in v["x"]]),
        ["feature 'x' holds int64_list, expected float32 (float_list)"],
    ),
    (
        "wrong label dtype",
        "train",
        lambda v: with_value(v, "label", [float(v["label"][0])]),
        ["feature 'label' holds float_list, expected int64"],
    ),
    (
        "width 63",
        "train",
        lambda v: with_value(v, "x", v["x"][:63]),
        ["feature 'x' holds 63 values, expected 64"],
    ),
    ("width 65", "held", lambda v: with_value(v, "x", [*v["x"], 0.0]), ["feature 'x' holds 65 values"]),
    ("NaN", "train", lambda v: nan_at(v, 17), ["feature 'x' holds NaN or infinite values"]),
    (
        "infinity",
        "held",
        lambda v: with_value(v, "x", [math.inf] * 64),
        ["feature 'x' holds NaN or infinite values"],
    ),
    (
        "label -1 held out",
        "held",
        lambda v: with_value(v, "label", -1),
        ["label 'label' is -1, expected a class index in 0..9"],
    ),
    (
        "label 10 held out",
        "held",
        lambda v: with_value(v, "label", 10),
        ["label 'label' is 10, expected a class index in 0..9"],
    ),
    (
        "label -1 train",
        "train",
        lambda v: with_value(v, "label", -1),
        ["label 'label' is -1, expected a class index in 0..9"],
    ),
    (
        "label 10 train",
        "train",
        lambda v: with_value(v, "label", 10),
        ["label 'label' is 10, expected a class index in 0..9"],
    ),
    ("not a tf.Example", "train", lambda v: b"not a tf.Example", ["not a tf.Example protocol buffer"]),
    ("binary junk", "held", lambda v: b"\x0a\xff\xfe junk \xff", ["not a tf.Example protocol buffer"]),
]


@pytest.mark.parametrize(
    ("split", "change", "fragments"),
    [case[1:] for case in BAD_RECORDS],
    ids=[case[0] for case in BAD_RECORDS],
)
def test_a_bad_record_is_named_by_file_record_and_feature(tmp_path, damaged, split, change, fragments):
    """One bad record (held-out or train split) fails training with its file, record index and feature."""
    config, file = damaged
    records = read_records(file)
    index = split_indexes(records, config.data.eval_percent, held=split == "held")[1]
    replace_record(file, index, change)
    assert_refused(config, file, index, *fragments)


def test_a_missing_feature_with_a_default_is_filled_not_refused(tmp_path, example_data):
    """A feature with a `default:` may be absent from an example: it trains, the default fills it."""
    data = copy_data(example_data, tmp_path / "data")
    config = small_window_config(
        tmp_path, data, features={"x": {"dtype": "float32", "shape": [64], "default": 0.0}}
    )
    file = data / DAMAGED_DAY / "part-00000.tfrecord"
    replace_record(file, 3, lambda v: without(v, "x"))
    assert example_problem(read_records(file)[3], config) is None
    result = train_model(config, SMALL_WINDOW_DATE, tmp_path / "work")
    assert result.data["train_examples"] + result.data["eval_examples"] == result.data["records"]


def test_a_record_with_a_bad_checksum_is_named(tmp_path, damaged):
    """A byte flipped inside a record (its CRC no longer matches) fails training naming file and record."""
    config, file = damaged
    offset, length = record_offsets(file)[5]
    content = bytearray(file.read_bytes())
    content[offset + 12 + length // 2] ^= 0xFF
    file.write_bytes(bytes(content))
    assert_refused(config, file, 5, "not a readable TFRecord file (truncated or corrupted)")


def test_a_file_truncated_mid_record_is_named(tmp_path, damaged):
    """A file cut inside its record 4 (a writer killed mid-write) fails naming file and record 4."""
    config, file = damaged
    offset, length = record_offsets(file)[4]
    file.write_bytes(file.read_bytes()[: offset + 12 + length // 2])
    assert_refused(config, file, 4, "truncated TFRecord file")


def test_random_bytes_as_a_file_are_named(tmp_path, damaged):
    """A .tfrecord file of random bytes beside the good one fails training naming that file."""
    config, file = damaged
    junk = file.with_name("part-00001.tfrecord")
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_refused(config, junk, None, "not a TFRecord file")


def test_a_class_name_outside_class_names_is_named(tmp_path, example_data):
    """With label.type class_name, a label not in model.class_names fails naming file, record, label."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    data = copy_data(example_data, tmp_path / "data")
    for file in sorted(data.glob("dt=*/*.tfrecord")):
        records = [example_values(r) for r in read_records(file)]
        write_records(file, [make_example(with_value(v, "label", words[v["label"][0]])) for v in records])
    config = small_window_config(
        tmp_path, data, label={"type": "class_name"}, model={"class_names": words}, training={"epochs": 6}
    )
    trained = train_model(config, SMALL_WINDOW_DATE, tmp_path / "good")
    assert trained.metrics["eval_accuracy"] > 0.5  # names map to their indexes
    file = data / DAMAGED_DAY / "part-00000.tfrecord"
    index = split_indexes(read_records(file), config.data.eval_percent, held=True)[0]
    replace_record(file, index, lambda v: with_value(v, "label", "eleven"))
    assert_refused(config, file, index, "label 'label' is 'eleven', expected one of model.class_names")


def test_a_huge_record_is_named_without_exhausting_memory(tmp_path, damaged):
    """A record holding two million floats where 64 belong fails naming its file, record and width."""
    config, file = damaged
    replace_record(file, 6, lambda v: with_value(v, "x", np.zeros(2_000_000, np.float32).tolist()))
    assert_refused(config, file, 6, "feature 'x' holds 2000000 values, expected 64")


def test_a_gzip_partition_cut_short_is_named(tmp_path, damaged):
    """A GZIP TFRecord file cut short (a copy that died) is named: TensorFlow would read up to the cut."""
    import tensorflow as tf

    config, file = damaged
    records = read_records(file)
    with tf.io.TFRecordWriter(str(file), options="GZIP") as writer:
        for record in records:
            writer.write(record)
    file.write_bytes(file.read_bytes()[:-4])  # every record, but not the end of the GZIP stream
    assert_refused(config, file, len(records), "truncated GZIP file")


def test_a_file_that_vanishes_after_listing_is_named(tmp_path, damaged):
    """A file deleted between listing the window and reading it: the read fails and diagnose names it."""
    import tensorflow as tf

    config, file = damaged
    window = data_window(config.data, SMALL_WINDOW_DATE)
    os.remove(file)
    with pytest.raises(tf.errors.NotFoundError):
        for _ in input_dataset(config, window.files, "eval", batch_size=64):
            pass
    with pytest.raises(DataError, match="cannot read the file") as info:
        diagnose(config, window.files)
    assert info.value.path == str(file) and info.value.permanent


def lineage_of(config) -> dict:
    """Returns the data lineage of a successful train step of `config`."""
    return run_train(config)["data"]


def test_links_out_of_the_data_location_are_skipped_and_listed(tmp_path, example_data):
    """A partition dir and a file that are links to elsewhere are not read; the lineage lists them."""
    data = copy_data(example_data, tmp_path / "data")
    outside = copy_data(example_data, tmp_path / "elsewhere")
    (data / "dt=2026-10-16").rename(tmp_path / "moved")
    (data / "dt=2026-10-16").symlink_to(outside / "dt=2026-10-16", target_is_directory=True)
    (data / DAMAGED_DAY / "part-00001.tfrecord").symlink_to(outside / "dt=2026-10-14" / "part-00000.tfrecord")
    lineage = lineage_of(small_window_config(tmp_path, data))
    assert "dt=2026-10-16 (outside the data location)" in lineage["skipped"]
    assert f"{DAMAGED_DAY}/part-00001.tfrecord (outside the data location)" in lineage["skipped"]
    assert "dt=2026-10-16" not in lineage["partitions"] and lineage["files"] == 3  # one per partition


def test_stray_entries_never_break_a_run_and_are_listed(tmp_path, example_data):
    """`dt=2026-13-45` (with data in it), `_SUCCESS`, `dt=2026-10-16.bak`: skipped, listed, the run trains."""
    data = copy_data(example_data, tmp_path / "data")
    (data / "dt=2026-13-45").mkdir()
    write_records(data / "dt=2026-13-45" / "part-00000.tfrecord", [b"junk"])
    (data / "_SUCCESS").write_text("")
    (data / "dt=2026-10-16").rename(data / "dt=2026-10-16.bak")
    lineage = lineage_of(small_window_config(tmp_path, data))
    assert {"dt=2026-13-45", "_SUCCESS", "dt=2026-10-16.bak"} <= set(lineage["skipped"])
    assert lineage["partitions"] == ["dt=2026-10-14", "dt=2026-10-15", "dt=2026-10-17"]


def test_empty_partitions_and_writers_temp_files_contribute_nothing(tmp_path, example_data):
    """An empty partition dir is listed as empty; a zero-byte file and a hidden temp file add no example."""
    data = copy_data(example_data, tmp_path / "data")
    baseline = lineage_of(small_window_config(tmp_path / "before", data))
    for path in (data / "dt=2026-10-16").iterdir():
        path.unlink()
    (data / DAMAGED_DAY / "part-00009.tfrecord").write_bytes(b"")
    write_records(data / DAMAGED_DAY / ".part-00010.tfrecord", [b"half-written by a writer"])
    lineage = lineage_of(small_window_config(tmp_path / "after", data))
    assert "dt=2026-10-16 (empty)" in lineage["skipped"]
    assert lineage["records"] == baseline["records"] - 60  # dt=2026-10-16 held 60 examples
    assert not any(".part-00010" in f for f in lineage["skipped"])


def test_duplicate_example_ids_train_and_stay_in_one_split(tmp_path, example_data):
    """Examples copied into a second partition train as they are: each copy lands in its id's split.

    The split is a function of the id, so a duplicate can never put a held-out example into the
    train split (no leak); the lineage counts every record read.
    """
    data = copy_data(example_data, tmp_path / "data")
    baseline = lineage_of(small_window_config(tmp_path / "before", data))
    copied = read_records(data / DAMAGED_DAY / "part-00000.tfrecord")
    write_records(data / "dt=2026-10-16" / "part-00001.tfrecord", copied)
    lineage = lineage_of(small_window_config(tmp_path / "after", data))
    held = len(split_indexes(copied, 20, held=True))
    assert lineage["eval_examples"] == baseline["eval_examples"] + held
    assert lineage["train_examples"] == baseline["train_examples"] + len(copied) - held
    assert lineage["records"] == baseline["records"] + len(copied)
