"""Training data: which partitions a run sees, the streaming held-out split, the fingerprint, no data.

Damaged data (bad records, files, links) is the hostile corpus of tests/reliability/test_hostile_data.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from include.config import DataConfig
from include.errors import NoDataError
from include.train.data import (
    data_window,
    held_out,
    held_out_sample,
    input_dataset,
    partitions_as_of,
    read_sample,
    write_sample,
)
from include.train.features import make_example
from include.train.training import train_model
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
