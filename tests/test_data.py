"""Training data: which partitions a run sees, the streaming held-out split, the fingerprint, bad data.

The bad-data tests damage one partition of a copy of the example data (written with
`include.features.make_example`) and train on it: the streaming input refuses the batch, and
`diagnose` names the partition file, the record and the feature (DataError); nothing is trained.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from include.config import DataConfig
from include.data import (
    data_window,
    example_problem,
    held_out,
    held_out_sample,
    input_dataset,
    partitions_as_of,
    read_sample,
    write_sample,
)
from include.errors import DataError, NoDataError
from include.features import make_example
from include.training import CHECKPOINT_DIR, train_model
from tests.helpers import (
    AFTER_ALL_DATA,
    DAMAGED_DAY,
    SMALL_WINDOW_DATE,
    copy_data,
    example_values,
    leftovers,
    read_records,
    record_offsets,
    small_window_config,
    split_indexes,
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
    """A partition without a .tfrecord file is listed as '(empty)'; a window of only such is NoDataError."""
    data = copy_data(example_data, tmp_path / "data")
    (data / "dt=2026-10-31").mkdir()
    (data / "dt=2026-10-31" / "notes.txt").write_text("no tfrecord here")
    window = data_window(data_config(data), dt.date(2026, 11, 1))
    assert window.skipped == ("dt=2026-10-31 (empty)",)
    assert window.partitions[-1] == "dt=2026-10-31" and len(window.files) == 30
    with pytest.raises(NoDataError, match=r"hold no \.tfrecord files"):
        data_window(data_config(data, window_days=1), dt.date(2026, 11, 1))


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


def test_fingerprint_covers_file_names(tmp_path, example_data):
    """Renaming a file (same bytes) changes the fingerprint: it digests names and contents."""
    data = copy_data(example_data, tmp_path / "data")
    before = data_window(data_config(data), AFTER_ALL_DATA).fingerprint
    partition = data / "dt=2026-10-07"
    (partition / "part-00000.tfrecord").rename(partition / "part-00001.tfrecord")
    assert data_window(data_config(data), AFTER_ALL_DATA).fingerprint != before


def test_eval_sample_round_trips_through_json(tmp_path):
    """write_sample / read_sample keep serialized examples byte for byte (base64 in JSON)."""
    examples = [make_example({"x": [0.5] * 64, "label": 3, "id": 7}), b"\x00\xff raw"]
    write_sample(tmp_path / "eval_sample.json", examples)
    assert read_sample(tmp_path / "eval_sample.json") == examples


# --- bad data: DataError naming the file, the record and the feature -------------------------------


@pytest.fixture
def damaged(tmp_path, example_data):
    """Returns (config over 4 partitions of a copy of the data, the file of the partition to damage)."""
    data = copy_data(example_data, tmp_path / "data")
    return small_window_config(tmp_path, data), data / DAMAGED_DAY / "part-00000.tfrecord"


def replace_record(file: Path, index: int, change) -> None:
    """Rewrites record `index` of `file` as make_example(change(values)), or change's bytes."""
    records = read_records(file)
    changed = change(example_values(records[index]))
    records[index] = changed if isinstance(changed, bytes) else make_example(changed)
    write_records(file, records)


def assert_refused(config, work_dir: Path, file: Path, record: int | None, *fragments: str) -> DataError:
    """Asserts training fails with DataError naming `file`, `record` and each fragment; no checkpoint left."""
    with pytest.raises(DataError) as info:
        train_model(config, SMALL_WINDOW_DATE, work_dir)
    error = info.value
    assert error.path == str(file) and error.record == record, str(error)
    message = str(error)
    assert str(file) in message and (record is None or f"record {record}" in message)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not (work_dir / CHECKPOINT_DIR).exists() and leftovers(work_dir) == []
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
    assert_refused(config, tmp_path / "work", file, index, *fragments)


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
    assert_refused(
        config, tmp_path / "work", file, 5, "not a readable TFRecord file (truncated or corrupted)"
    )


def test_a_file_truncated_mid_record_is_named(tmp_path, damaged):
    """A file cut inside its record 4 (a writer killed mid-write) fails naming file and record 4."""
    config, file = damaged
    offset, length = record_offsets(file)[4]
    file.write_bytes(file.read_bytes()[: offset + 12 + length // 2])
    assert_refused(config, tmp_path / "work", file, 4, "truncated TFRecord file")


def test_random_bytes_as_a_file_are_named(tmp_path, damaged):
    """A .tfrecord file of random bytes beside the good one fails training naming that file."""
    config, file = damaged
    junk = file.with_name("part-00001.tfrecord")
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_refused(config, tmp_path / "work", junk, 0, "truncated TFRecord file")


def test_a_class_name_outside_class_names_is_named(tmp_path, example_data):
    """With label.type class_name, a label not in model.class_names fails naming file, record, label."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    data = copy_data(example_data, tmp_path / "data")
    for file in sorted(data.glob("dt=*/*.tfrecord")):
        records = [example_values(r) for r in read_records(file)]
        write_records(file, [make_example(with_value(v, "label", words[v["label"][0]])) for v in records])
    config = small_window_config(
        tmp_path, data, label={"type": "class_name"}, model={"class_names": words}, training={"epochs": 3}
    )
    trained = train_model(config, SMALL_WINDOW_DATE, tmp_path / "good")
    assert trained.metrics["eval_accuracy"] > 0.5  # names map to their indexes
    file = data / DAMAGED_DAY / "part-00000.tfrecord"
    index = split_indexes(read_records(file), config.data.eval_percent, held=True)[0]
    replace_record(file, index, lambda v: with_value(v, "label", "eleven"))
    assert_refused(
        config, tmp_path / "work", file, index, "label 'label' is 'eleven', expected one of model.class_names"
    )


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
    with pytest.raises(NoDataError, match="the train split is empty"):
        train_model(config, SMALL_WINDOW_DATE, tmp_path / "work", steps=steps)


def test_an_empty_held_out_split_is_no_data(tmp_path):
    """A window whose examples all fall in the train split fails with NoDataError naming the split."""
    config = small_window_config(tmp_path, one_split_data(tmp_path, held=False))
    with pytest.raises(NoDataError, match=r"the held-out split of dt=2026-10-16 .. dt=2026-10-16 is empty"):
        train_model(config, SMALL_WINDOW_DATE, tmp_path / "work")
