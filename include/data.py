"""Training data: date partitions of TFRecord `tf.Example` files, and what a run reads of them.

Layout: `<location>/dt=YYYY-MM-DD/part-00000.tfrecord`. A partition dated D holds the examples
that arrived during day D (UTC), so it is complete from D+1 00:00 on: a run whose logical date is
D reads the partitions dated before D (within `window_days`), never the one still being written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from include.config import DataConfig
from include.errors import NoDataError

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Dataset:
    """The examples a run reads, split deterministically into train and eval."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    partitions: tuple[str, ...]
    fingerprint: str

    def summary(self) -> dict:
        """Returns the small JSON-able description recorded in XCom and lineage."""
        return {
            "partitions": list(self.partitions),
            "first_partition": self.partitions[0],
            "last_partition": self.partitions[-1],
            "train_examples": len(self.train_y),
            "eval_examples": len(self.eval_y),
            "fingerprint": self.fingerprint,
        }


def partitions_as_of(config: DataConfig, as_of: dt.date) -> list[Path]:
    """Returns the complete partition dirs visible to a run dated `as_of`, oldest first."""
    root = Path(config.location)
    if not root.is_dir():
        raise NoDataError(f"data location {root} does not exist")
    first = as_of - dt.timedelta(days=config.window_days) if config.window_days else dt.date.min
    chosen = []
    for entry in sorted(root.iterdir()):
        match = _PARTITION.match(entry.name)
        if not match or not entry.is_dir():
            continue
        day = dt.date.fromisoformat(match.group(1))
        if first <= day < as_of:
            chosen.append(entry)
    return chosen


def load_dataset(config: DataConfig, as_of: dt.date, num_features: int) -> Dataset:
    """Returns the examples available as of `as_of`, split into train/eval; raises NoDataError."""
    import tensorflow as tf

    partitions = partitions_as_of(config, as_of)
    window = f"the last {config.window_days} days" if config.window_days else "all days"
    if not partitions:
        raise NoDataError(
            f"no data partitions in {config.location} before {as_of.isoformat()} ({window}); "
            "nothing to train on for this date"
        )
    files = [f for p in partitions for f in sorted(p.glob("*.tfrecord"))]
    digest = hashlib.sha256()
    ids, xs, ys = [], [], []
    feature_spec = {
        config.feature_key: tf.io.FixedLenFeature([num_features], tf.float32),
        config.label_key: tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.int64),
    }
    for file in files:
        digest.update(f"{file.parent.name}/{file.name}:{file.stat().st_size}\n".encode())
        for record in tf.data.TFRecordDataset(str(file)).batch(4096):
            parsed = tf.io.parse_example(record, feature_spec)
            xs.append(parsed[config.feature_key].numpy())
            ys.append(parsed[config.label_key].numpy())
            ids.append(parsed["id"].numpy())
    if not xs:
        raise NoDataError(f"partitions {[p.name for p in partitions]} hold no examples")
    x, y, example_ids = np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)
    for chunk in (x, y, example_ids):
        digest.update(np.ascontiguousarray(chunk).tobytes())
    is_eval = np.array([_is_eval(int(i), config.eval_percent) for i in example_ids], dtype=bool)
    if is_eval.all() or not is_eval.any():
        raise NoDataError(
            f"{len(y)} examples as of {as_of.isoformat()} are too few to split into train and eval"
        )
    return Dataset(
        train_x=x[~is_eval],
        train_y=y[~is_eval],
        eval_x=x[is_eval],
        eval_y=y[is_eval],
        partitions=tuple(p.name for p in partitions),
        fingerprint=digest.hexdigest(),
    )


def _is_eval(example_id: int, eval_percent: int) -> bool:
    """Returns whether an example belongs to the held-out split (stable across runs and dates)."""
    return zlib.crc32(f"example-{example_id}".encode()) % 100 < eval_percent


def serialize_examples(x: np.ndarray, feature_key: str = "x") -> list[bytes]:
    """Returns serialized `tf.Example`s holding only the features (what a client sends)."""
    import tensorflow as tf

    return [
        tf.train.Example(
            features=tf.train.Features(
                feature={feature_key: tf.train.Feature(float_list=tf.train.FloatList(value=row))}
            )
        ).SerializeToString()
        for row in np.asarray(x, dtype=np.float32)
    ]
