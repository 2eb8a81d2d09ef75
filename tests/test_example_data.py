"""The example data set: every digit exactly once, one partition a day, the same bytes every time."""

from __future__ import annotations

import datetime as dt

from include.savedmodel.files import content_digest
from tools.example_data import EXAMPLE_FIRST_DAY, write_example_partitions


def read_ids(partition) -> list[int]:
    """Returns the example ids stored in one partition's TFRecord file."""
    import tensorflow as tf

    spec = {"id": tf.io.FixedLenFeature([], tf.int64)}
    return [
        int(tf.io.parse_single_example(record, spec)["id"])
        for record in tf.data.TFRecordDataset(str(partition / "part-00000.tfrecord"))
    ]


def test_partitions_are_consecutive_days_holding_every_digit_once(example_data):
    """Daily partitions from the first day on, no gaps, together holding all 1,797 digits once."""
    partitions = sorted(example_data.iterdir())
    days = [dt.date.fromisoformat(p.name.removeprefix("dt=")) for p in partitions]
    assert days == [EXAMPLE_FIRST_DAY + dt.timedelta(days=i) for i in range(len(days))]
    ids = [i for partition in partitions for i in read_ids(partition)]
    assert sorted(ids) == list(range(1797))
    assert all(read_ids(partition) for partition in partitions)  # no empty day


def test_rewriting_gives_the_same_bytes(example_data, tmp_path):
    """Writing the example data again produces byte-identical partitions (reproducible runs)."""
    write_example_partitions(tmp_path / "again")
    assert content_digest(tmp_path / "again") == content_digest(example_data)
