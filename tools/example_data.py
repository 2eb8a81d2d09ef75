"""The example data sets, as daily TFRecord partitions: data that scikit-learn ships, no download.

- digits (`digits_softmax`): 1,797 8x8 images, `x` (64 floats), `label` (0..9), `id`;
- diabetes (`diabetes_keras`): 442 patients, nine numeric features, `sex` as a string, and the
  disease progression a year later as the float `target`, `id`.

Written in the layout include/train/window.py reads (`<location>/dt=YYYY-MM-DD/part-00000.tfrecord`),
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

#: The example pipelines (include/pipelines/) whose data this module writes.
EXAMPLE_PIPELINES = ("digits_softmax", "diabetes_keras")


def write_example_data(pipeline_name: str, location: str | os.PathLike[str]) -> list[Path]:
    """Writes the example data set of an example pipeline into `location`; returns the partition dirs."""
    if pipeline_name not in EXAMPLE_PIPELINES:
        raise ValueError(f"no example data for pipeline {pipeline_name!r} (known: {list(EXAMPLE_PIPELINES)})")
    writer = write_example_partitions if pipeline_name == "digits_softmax" else write_diabetes_partitions
    return writer(location)


def write_diabetes_partitions(location: str | os.PathLike[str]) -> list[Path]:
    """Writes scikit-learn's diabetes set (unscaled) into daily partitions; returns the partition dirs.

    scikit-learn codes sex as 1 and 2 without saying which is which; it is written as the strings
    "F" (1) and "M" (2) here, so the pipeline has a string categorical feature to encode.
    """
    from sklearn.datasets import load_diabetes

    from include.train.features import make_example

    diabetes = load_diabetes(scaled=False)
    names = list(diabetes.feature_names)

    def example(i: int) -> bytes:
        row = dict(zip(names, diabetes.data[i].tolist(), strict=True))
        values = {name: float(value) for name, value in row.items() if name != "sex"}
        values["sex"] = "F" if row["sex"] == 1 else "M"
        return make_example({**values, "target": float(diabetes.target[i]), "id": i})

    return _write_partitions(location, len(diabetes.target), example)


def _write_partitions(location: str | os.PathLike[str], count: int, example) -> list[Path]:
    """Writes examples 0..count-1 spread over EXAMPLE_DAYS daily partitions (same bytes every call)."""
    import tensorflow as tf

    root = Path(location)
    written = []
    for day_index in range(EXAMPLE_DAYS):
        day = EXAMPLE_FIRST_DAY + dt.timedelta(days=day_index)
        partition = root / f"dt={day.isoformat()}"
        partition.mkdir(parents=True, exist_ok=True)
        target = partition / "part-00000.tfrecord"
        tmp = partition / ".part-00000.tfrecord.tmp"
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for i in range(day_index, count, EXAMPLE_DAYS):
                writer.write(example(i))
        os.replace(tmp, target)
        written.append(partition)
    log.info("wrote %d partitions under %s", len(written), root)
    return written


def write_example_partitions(location: str | os.PathLike[str]) -> list[Path]:
    """Writes sklearn's digits into daily TFRecord partitions and returns the partition dirs.

    Pixel values (0..16) are scaled to 0..1. Rewrites the same bytes on every call.
    """
    from sklearn.datasets import load_digits

    from include.train.features import make_example

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return _write_partitions(
        location,
        len(labels),
        lambda i: make_example({"x": images[i], "label": int(labels[i]), "id": i}),
    )
