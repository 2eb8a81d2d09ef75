"""The example data set: scikit-learn's 1,797 digits as daily TFRecord partitions.

Written in the layout include/data.py reads (`<location>/dt=YYYY-MM-DD/part-00000.tfrecord`),
one partition a day from EXAMPLE_FIRST_DAY on, for the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: sklearn's digits spread over these days, one partition a day.
EXAMPLE_FIRST_DAY = dt.date(2026, 10, 1)
EXAMPLE_DAYS = 30


def write_example_partitions(location: str | os.PathLike[str]) -> list[Path]:
    """Writes sklearn's digits into daily TFRecord partitions and returns the partition dirs.

    Pixel values (0..16) are scaled to 0..1. Rewrites the same bytes on every call.
    """
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    root = Path(location)
    written = []
    for day_index in range(EXAMPLE_DAYS):
        day = EXAMPLE_FIRST_DAY + dt.timedelta(days=day_index)
        partition = root / f"dt={day.isoformat()}"
        partition.mkdir(parents=True, exist_ok=True)
        target = partition / "part-00000.tfrecord"
        tmp = partition / ".part-00000.tfrecord.tmp"
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for i in range(day_index, len(labels), EXAMPLE_DAYS):
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "x": tf.train.Feature(float_list=tf.train.FloatList(value=images[i])),
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
                            "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                        }
                    )
                )
                writer.write(example.SerializeToString())
        os.replace(tmp, target)
        written.append(partition)
    log.info("wrote %d partitions of the digits data set under %s", len(written), root)
    return written
