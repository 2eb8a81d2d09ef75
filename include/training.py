"""Training: fit the serving graph on the data as of a date, write a checkpoint and metrics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from include.config import PipelineConfig
from include.data import load_dataset
from include.errors import NoDataError, QualityGateError
from include.model import build_serving_graph

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PREFIX = "model.ckpt"
METRICS_FILE = "metrics.json"
EVAL_SAMPLE_FILE = "eval_sample.npz"
EVAL_SAMPLE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What train hands on: small, JSON-able (it travels through XCom)."""

    checkpoint: str
    metrics: dict
    data: dict
    hyperparameters: dict

    def to_dict(self) -> dict:
        """Returns the result as a plain dict."""
        return dataclasses.asdict(self)


def train_model(
    config: PipelineConfig,
    as_of: dt.date,
    work_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    learning_rate: float | None = None,
) -> TrainResult:
    """Returns the result of training `config`'s model on the data as of `as_of` into `work_dir`.

    The checkpoint is written to a temporary directory and renamed into place, so a crash never
    leaves a half-written checkpoint where validate/export will look for it.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    training = config.training.model_copy(
        update={
            "steps": steps if steps is not None else config.training.steps,
            "learning_rate": learning_rate if learning_rate is not None else config.training.learning_rate,
        }
    )
    dataset = load_dataset(config.data, as_of, config.model.num_features)
    log.info(
        "training %s on %d examples from %d partitions (%s .. %s), %d held out",
        config.name,
        len(dataset.train_y),
        len(dataset.partitions),
        dataset.partitions[0],
        dataset.partitions[-1],
        len(dataset.eval_y),
    )
    bad_labels = (dataset.train_y < 0) | (dataset.train_y >= config.model.num_classes)
    if bad_labels.any():
        raise NoDataError(
            f"{int(bad_labels.sum())} training labels are outside 0..{config.model.num_classes - 1}"
        )

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # An earlier attempt killed while saving left its own temp dir (another pid): remove them all.
    for stale in work_dir.glob(f".{CHECKPOINT_DIR}-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = work_dir / f".{CHECKPOINT_DIR}-tmp-{os.getpid()}"

    serving = build_serving_graph(config, with_training=True)
    rng = np.random.RandomState(training.seed)
    n = len(dataset.train_y)
    batch_size = min(training.batch_size, n)
    order = rng.permutation(n)
    cursor = 0
    started = time.perf_counter()
    with v1.Session(graph=serving.graph, config=_session_config()) as sess:
        sess.run(v1.global_variables_initializer())
        sess.run(v1.tables_initializer())
        for step in range(1, training.steps + 1):
            if cursor + batch_size > n:
                order, cursor = rng.permutation(n), 0
            batch = order[cursor : cursor + batch_size]
            cursor += batch_size
            _, loss = sess.run(
                [serving.train_op, serving.loss],
                feed_dict={
                    serving.features: dataset.train_x[batch],
                    serving.labels: dataset.train_y[batch],
                    serving.learning_rate: training.learning_rate,
                },
            )
            if step % training.log_every_steps == 0 or step == training.steps:
                elapsed = time.perf_counter() - started
                log.info(
                    "step %d/%d loss=%.4f (%.0f examples/s)",
                    step,
                    training.steps,
                    loss,
                    step * batch_size / max(elapsed, 1e-9),
                )
        train_seconds = time.perf_counter() - started
        if not np.isfinite(loss):
            raise QualityGateError("train_loss", float(loss), "a finite value (lower the learning rate)")
        metrics = {
            **_evaluate(sess, serving, dataset.eval_x, dataset.eval_y, "eval"),
            **_evaluate(sess, serving, dataset.train_x, dataset.train_y, "train"),
            "train_seconds": round(train_seconds, 3),
            "examples_per_second": round(training.steps * batch_size / max(train_seconds, 1e-9), 1),
        }
        tmp_dir.mkdir(parents=True)
        saver = v1.train.Saver(var_list=serving.model_variables)
        saver.save(sess, str(tmp_dir / CHECKPOINT_PREFIX), write_meta_graph=False)

    np.savez(
        tmp_dir / EVAL_SAMPLE_FILE, x=dataset.eval_x[:EVAL_SAMPLE_SIZE], y=dataset.eval_y[:EVAL_SAMPLE_SIZE]
    )
    (tmp_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    final_dir = work_dir / CHECKPOINT_DIR
    shutil.rmtree(final_dir, ignore_errors=True)
    os.rename(tmp_dir, final_dir)
    log.info(
        "held-out accuracy %.4f, loss %.4f; checkpoint in %s",
        metrics["eval_accuracy"],
        metrics["eval_loss"],
        final_dir,
    )
    return TrainResult(
        checkpoint=str(final_dir / CHECKPOINT_PREFIX),
        metrics=metrics,
        data=dataset.summary(),
        hyperparameters=training.model_dump(),
    )


def _session_config():
    """Returns a session config with fixed thread pools, so runs are reproducible."""
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


def _evaluate(sess, serving, x: np.ndarray, y: np.ndarray, prefix: str) -> dict:
    """Returns accuracy and mean cross-entropy of the graph's scores on (x, y)."""
    scores = sess.run(serving.scores, feed_dict={serving.features: x})
    predicted = scores.argmax(axis=1)
    picked = np.clip(scores[np.arange(len(y)), y], 1e-12, 1.0)
    return {
        f"{prefix}_accuracy": round(float((predicted == y).mean()), 6),
        f"{prefix}_loss": round(float(-np.log(picked).mean()), 6),
        f"{prefix}_examples": len(y),
    }
