"""Training: fit the model on the data as of a date, streamed, and write a checkpoint and metrics.

The model trains in a TF1 graph fed by a `tf.data` iterator (include/train/data.py), never holding the
data set in memory, up to `STEPS_PER_RUN` train steps per `session.run` (an in-graph loop); the
held-out split is evaluated in one streaming pass after training. The
checkpoint holds exactly the model's weights, under the names the serving graph restores.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from include.config import PipelineConfig
from include.errors import ConfigError, DataError, ModelBuilderError, NoDataError, QualityGateError
from include.failpoints import failpoint
from include.summary import metrics_headline
from include.train.data import diagnose, held_out_sample, input_dataset, window_pass, write_sample
from include.train.model import new_network, state_updates
from include.train.statistics import WindowStatistics, bin_edges
from include.train.window import data_window

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PREFIX = "model.ckpt"
METRICS_FILE = "metrics.json"
#: The window's statistics and the data checks' report, beside the checkpoint (they travel with it).
STATISTICS_FILE = "statistics.json"
EVAL_SAMPLE_FILE = "eval_sample.json"
EVAL_SAMPLE_SIZE = 32
EVAL_BATCH_SIZE = 4096
#: The train loss and accuracy reported are the means over this many last steps.
_RUNNING_STEPS = 100
#: Train steps run by one `session.run`, in a loop inside the graph: a run costs a Python round
#: trip, a feed and the fetches (~0.3 ms), as much as a whole softmax step of 50 examples. Runs
#: also end at each `log_every_steps` step, so a logged rate is measured at its step.
STEPS_PER_RUN = 100


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What train hands on: small, JSON-able (it travels through XCom)."""

    checkpoint: str
    metrics: dict
    data: dict
    hyperparameters: dict
    data_checks: dict | None = None  # what `check_data` returned: verdict, baseline, failed rows
    slices: dict = dataclasses.field(default_factory=dict)  # {slice: {key: held-out metrics}}

    def to_dict(self) -> dict:
        """Returns the result as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _TrainGraph:
    """The tensors and ops of one training graph."""

    graph: object
    network: object
    train_iterator: object
    eval_iterator: object
    stats_iterator: object
    stats: dict  # the per-batch statistics, per-partition held-out counts
    slice_sums: dict  # per slice: keys and sums of the eval batch
    max_steps: object  # placeholder: the most train steps the next run takes
    train_run: dict  # steps run, and each step's loss, correct predictions and example count
    learning_rate: object
    eval_sums: dict


def train_model(
    config: PipelineConfig,
    as_of: dt.date,
    work_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    learning_rate: float | None = None,
    baseline_statistics: dict | None = None,
    check_data: Callable[[dict], dict] | None = None,
) -> TrainResult:
    """Returns the result of training `config`'s model on the data as of `as_of` into `work_dir`.

    Before training, one pass over the whole window computes its statistics
    (include/train/statistics.py; with the baseline's quantile edges from `baseline_statistics`,
    for drift) and keeps the held-out rows in a local cache that the evaluation after training
    reads. `check_data(statistics)` runs then: it raises to stop the run before any training
    step, or returns its report (recorded in the result and beside the checkpoint).

    The checkpoint is written to a temporary directory and renamed into place, so a crash never
    leaves a half-written checkpoint where validate/export will look for it. Bad data raises
    DataError naming the file, record and feature; an empty split raises NoDataError.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    training = config.training.model_copy(
        update={
            "steps": steps if steps is not None else config.training.steps,
            "epochs": None if steps is not None else config.training.epochs,
            "learning_rate": learning_rate if learning_rate is not None else config.training.learning_rate,
        }
    )
    config = config.model_copy(update={"training": training})
    window = data_window(config.data, as_of)
    log.info(
        "training %s on %d files (%.1f MB) of %d partitions (%s .. %s), %s",
        config.name,
        len(window.files),
        window.bytes / 1e6,
        len(window.partitions),
        window.partitions[0],
        window.partitions[-1],
        f"{training.steps} steps" if training.steps else f"{training.epochs} epochs",
    )
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # An earlier attempt killed while saving left its own temp dir (another pid): remove them all.
    for stale in work_dir.glob(f".{CHECKPOINT_DIR}-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in work_dir.glob(".held-out-cache-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = work_dir / f".{CHECKPOINT_DIR}-tmp-{os.getpid()}"
    cache_dir = work_dir / f".held-out-cache-{os.getpid()}"
    cache_dir.mkdir()

    edges = bin_edges(baseline_statistics, config)
    built = _build_training_graph(config, window, edges, cache_dir / "held-out")
    refused = (
        tf.errors.InvalidArgumentError,
        tf.errors.DataLossError,
        tf.errors.NotFoundError,  # a file removed since the window was listed
        tf.errors.PermissionDeniedError,
    )
    try:
        with v1.Session(graph=built.graph, config=session_config(training.deterministic)) as sess:
            sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
            statistics = report = None
            if config.data_checks.statistics:
                statistics = _window_statistics(sess, built, config, window, edges)
                _check_splits(statistics["examples"], statistics["held_out"], window)
                if any(
                    stats["nonfinite"] for stats in [*statistics["features"].values(), statistics["label"]]
                ):
                    raise tf.errors.InvalidArgumentError(None, None, "NaN or infinite values in the window")
                report = check_data(statistics) if check_data is not None else None
            trained = _fit(sess, built, config)
            evaluated = _evaluate(sess, built, config)
            held = evaluated["metrics"]["eval_examples"]
            if statistics is None:  # the records were counted as the held-out pass read them
                _check_splits(evaluated["parsed"], held, window)
            counts = {"eval_examples": held, "train_examples": (window.records or 0) - held}
            metrics = {**evaluated["metrics"], **trained}
            tmp_dir.mkdir(parents=True)
            saver = v1.train.Saver(var_list=built.network.variables())
            saver.save(sess, str(tmp_dir / CHECKPOINT_PREFIX), write_meta_graph=False)
    except (*refused, UnicodeDecodeError) as err:
        # A record that is no tf.Example: TensorFlow's message quotes its bytes, and when they are not
        # UTF-8 the session raises UnicodeDecodeError instead of InvalidArgumentError.
        reason = err.message if isinstance(err, tf.errors.OpError) else "a record is not a tf.Example"
        # Out of the session's graph: diagnose reads the files eagerly.
        log.error("the input pipeline refused a batch (%s); finding the record", reason.splitlines()[0])
        diagnose(config, window.files)
        raise DataError(", ".join(window.partitions), f"TensorFlow refused the data: {reason}") from None
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    if statistics is not None:
        statistics["report"] = (report or {}).get("rows", [])
        (tmp_dir / STATISTICS_FILE).write_text(json.dumps(statistics, sort_keys=True))
    write_sample(tmp_dir / EVAL_SAMPLE_FILE, held_out_sample(config, window.files, EVAL_SAMPLE_SIZE))
    (tmp_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    final_dir = work_dir / CHECKPOINT_DIR
    shutil.rmtree(final_dir, ignore_errors=True)
    os.rename(tmp_dir, final_dir)
    log.info("%s; checkpoint in %s", metrics_headline(metrics), final_dir)
    return TrainResult(
        checkpoint=str(final_dir / CHECKPOINT_PREFIX),
        metrics=metrics,
        data={**window.summary(), **counts},
        hyperparameters=training.model_dump(),
        data_checks={key: value for key, value in (report or {}).items() if key != "rows"} or None,
        slices=evaluated["slices"],
    )


def window_statistics(
    config: PipelineConfig, as_of: dt.date, baseline_statistics: dict | None = None
) -> dict:
    """Returns the statistics of the window a run dated `as_of` reads, without training (tools, tests, bench).

    The same pass as train_model's, so the same figures; with `baseline_statistics`, the drift bins
    on its quantile edges too.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    window = data_window(config.data, as_of)
    edges = bin_edges(baseline_statistics, config)
    graph = tf.Graph()
    with graph.as_default():
        passed = window_pass(
            config,
            window.files,
            _partition_of(window),
            len(window.partitions),
            edges,
            batch_size=EVAL_BATCH_SIZE,
        )
        iterator = v1.data.make_initializable_iterator(passed)
        element = iterator.get_next()
        fetch = {"stats": element["stats"], "held_out": element["held_out"]}
    statistics = WindowStatistics(config, window.partitions, edges)
    with v1.Session(graph=graph, config=session_config(config.training.deterministic)) as sess:
        sess.run(iterator.initializer)
        while True:
            try:
                batch = sess.run(fetch)
            except tf.errors.OutOfRangeError:
                break
            statistics.add(batch["stats"], batch["held_out"])
    return statistics.to_dict()


def _partition_of(window) -> list[int]:
    """Returns the index in `window.partitions` of each of its files' partition (its parent dir or prefix)."""
    return [window.partitions.index(PurePosixPath(str(file)).parent.name) for file in window.files]


def _window_statistics(sess, built: _TrainGraph, config: PipelineConfig, window, edges: dict) -> dict:
    """Returns the statistics of one pass over the window (which also fills the held-out cache)."""
    import tensorflow as tf

    sess.run(built.stats_iterator.initializer)
    statistics = WindowStatistics(config, window.partitions, edges)
    while True:
        try:
            batch = sess.run(built.stats)
        except tf.errors.OutOfRangeError:
            break
        statistics.add(batch["stats"], batch["held_out"])
    return statistics.to_dict()


def _check_splits(examples: int | None, held_out: int, window) -> None:
    """Raises NoDataError when the train or the held-out split of the window has no example.

    And DataError when TensorFlow read another number of records than the window's files hold
    (a file replaced while training): the lineage counts what was read.
    """
    if examples != window.records:
        raise DataError(
            ", ".join(window.partitions),
            f"TensorFlow read {examples} records, the {len(window.files)} files listed hold {window.records} "
            "(a file changed while training?)",
        )
    train = examples - held_out
    if held_out == 0 or train == 0:
        empty = "held-out" if held_out == 0 else "train"
        raise NoDataError(
            f"the {empty} split of {window.partitions[0]} .. {window.partitions[-1]} is empty "
            f"({train} train, {held_out} held-out examples)"
        )


def session_config(deterministic: bool):
    """Returns the session config: model math on one thread when deterministic, else on all cores.

    The input pipeline reads and parses in parallel either way (tf.data keeps its order when
    deterministic); float sums split across threads are what would make reruns differ.
    """
    import tensorflow as tf

    intra = 1 if deterministic else 0  # 0 = one thread per core
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=0)


def _build_training_graph(config: PipelineConfig, window, edges: dict, cache: Path) -> _TrainGraph:
    """Returns a graph with the window's statistics pass, train input, model, train loop and eval pass.

    The statistics pass is cached in `cache` as it runs: the eval pass after training reads its
    held-out rows from there instead of reading and parsing the window again.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    training = config.training
    files = window.files
    partition_of = _partition_of(window)
    network = new_network(config)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(training.seed)
        train = input_dataset(config, files, "train", batch_size=training.batch_size, epochs=training.epochs)
        train_iterator = v1.data.make_initializable_iterator(train)
        # The model's variables are made here, outside the loop (a loop cannot create variables),
        # by a first call that is never run; the loop's calls reuse them.
        network(train_iterator.get_next()[0], training=True)
        learning_rate = v1.placeholder_with_default(
            tf.constant(training.learning_rate, tf.float32), shape=[], name="learning_rate"
        )
        if training.optimizer == "adam":
            optimizer = v1.train.AdamOptimizer(learning_rate)
        else:
            optimizer = v1.train.GradientDescentOptimizer(learning_rate)
        global_step = v1.train.get_or_create_global_step()
        made = {v.op.name for v in v1.global_variables()}

        def train_step(features, labels):
            """Returns (loss, correct, count) of one step, after its update and the model's state updates."""
            step_graph = v1.get_default_graph()  # the loop's own graph
            first_op = len(step_graph.get_operations())
            raw = network(features, training=True)
            updates = state_updates(step_graph, first_op)
            loss, correct = _loss_and_correct(raw, labels, config)
            loss = tf.reduce_mean(loss, name="loss")
            trainable = network.trainable_variables()
            train_op = optimizer.minimize(loss, var_list=trainable, global_step=global_step)
            # The state updates run after the step, not merely with it: a graph orders a read of a
            # variable and a write to it only by their dependencies, and Keras's Dropout reads its
            # seed state while the update beside it advances that state, so unordered, the mask
            # of a step would depend on thread timing and reruns would differ.
            for update in updates:
                update._add_control_inputs([train_op])  # the op is built: no public way to add one
            with tf.control_dependencies([train_op, *updates]):
                return tf.identity(loss), tf.reduce_sum(correct), tf.size(labels)

        max_steps = v1.placeholder_with_default(1, shape=[], name="max_steps")
        train_run = _reusing_train_loop(
            config, train_iterator, train_step, max_steps, optimizer=optimizer, made=made
        )
        with_statistics = config.data_checks.statistics
        passed = window_pass(
            config,
            files,
            partition_of,
            len(window.partitions),
            edges,
            batch_size=EVAL_BATCH_SIZE,
            statistics=with_statistics,
        )
        stats_iterator = stats = None
        if with_statistics:  # one pass before training; the held-out pass reads its cache
            passed = passed.cache(str(cache))
            stats_iterator = v1.data.make_initializable_iterator(passed)
            element = stats_iterator.get_next()
            stats = {"stats": element["stats"], "held_out": element["held_out"]}
        held_out = passed.map(
            lambda element: (element["features"], element["label"], element.get("parsed", 0))
        ).prefetch(2)
        eval_iterator = v1.data.make_initializable_iterator(held_out)
        eval_features, eval_labels, parsed = eval_iterator.get_next()
        eval_loss, eval_correct = _loss_and_correct(
            network(eval_features, training=False), eval_labels, config
        )
        eval_sums = {
            "loss": tf.reduce_sum(eval_loss),
            "correct": tf.reduce_sum(eval_correct),
            "count": tf.size(eval_labels),
            "parsed": parsed,  # records of both splits (counted here only without the statistics pass)
        }
        if config.model.head == "regression":
            eval_sums["abs_error"] = tf.reduce_sum(tf.sqrt(eval_loss))
        slice_sums = _slice_sums(config, eval_features, eval_labels, eval_loss, eval_correct)
    return _TrainGraph(
        graph=graph,
        network=network,
        train_iterator=train_iterator,
        eval_iterator=eval_iterator,
        stats_iterator=stats_iterator,
        stats=stats,
        slice_sums=slice_sums,
        max_steps=max_steps,
        train_run=train_run,
        learning_rate=learning_rate,
        eval_sums=eval_sums,
    )


def _reusing_train_loop(
    config: PipelineConfig, iterator, train_step, max_steps, *, optimizer, made: set[str]
) -> dict:
    """Returns `_train_loop(...)`; a ConfigError when the model makes variables inside the loop.

    `made` names the variables that existed before (the model's, from its first call). TensorFlow
    refuses a `tf.Variable` made in a loop (ValueError); one with a callable initial value it
    makes, and that shows as a variable beyond `made` and the optimizer's slots (Adam's moments,
    made in an init scope, outside the loop).
    """
    import tensorflow as tf

    source = str(config.source_path or "<config>")
    reuse = (
        f"model.builder: {config.model.builder!r} must reuse its variables when called again "
        "(tf.compat.v1.get_variable or Keras layers, not tf.Variable)"
    )
    try:
        train_run = _train_loop(iterator, train_step, max_steps)
    except (ValueError, ModelBuilderError) as err:
        # TensorFlow refuses the tf.Variable inside the builder's call, so it comes wrapped (and
        # tf.cond drops the chain: `raise ... from None`), hence the original's message.
        original = err.error_message if isinstance(err, ModelBuilderError) else str(err)
        named = re.search(r"Tried to create variable with name='([^']*)'", original)
        if isinstance(err, ModelBuilderError) and not named:
            raise
        made_one = f"it made {named.group(1)!r} again" if named else str(err).splitlines()[0][:300]
        raise ConfigError(source, [f"{reuse}; {made_one}"]) from None
    made = made | {v.op.name for v in optimizer.variables()}
    inside = sorted({v.op.name for v in tf.compat.v1.global_variables()} - made)
    if inside:
        raise ConfigError(source, [f"{reuse}; it made {inside}"])
    return train_run


def _train_loop(iterator, train_step, max_steps) -> dict:
    """Returns the fetches of a loop running `train_step` on the next batches, at most `max_steps` times.

    The loop stops early, without an error, when the input ends (the epochs are done): each
    iteration asks for the next batch as an optional, so no batch is read and left untrained, and
    the steps a run did are counted. One iteration at a time: a step reads the weights the
    previous one wrote. Fetches: `steps` run, and per step `loss`, `correct`, `count`.
    """
    import tensorflow as tf

    def body(step, ended, losses, corrects, counts):
        batch = iterator.get_next_as_optional()

        def train():
            loss, correct, count = train_step(*batch.get_value())
            return loss, correct, count, tf.constant(False)

        def end():
            return tf.constant(0.0), tf.constant(0.0), tf.constant(0), tf.constant(True)

        loss, correct, count, ended = tf.cond(batch.has_value(), train, end)
        return (
            step + 1 - tf.cast(ended, tf.int32),
            ended,
            losses.write(step, loss),
            corrects.write(step, correct),
            counts.write(step, count),
        )

    def more(step, ended, *_):
        return tf.logical_and(step < max_steps, tf.logical_not(ended))

    def per_step(dtype):
        return tf.TensorArray(dtype, size=0, dynamic_size=True, element_shape=[])

    steps, _, losses, corrects, counts = tf.while_loop(
        more,
        body,
        [tf.constant(0), tf.constant(False), per_step(tf.float32), per_step(tf.float32), per_step(tf.int32)],
        parallel_iterations=1,
    )
    return {"steps": steps, "loss": losses.stack(), "correct": corrects.stack(), "count": counts.stack()}


def _loss_and_correct(raw, labels, config: PipelineConfig):
    """Returns per-example losses (cross-entropy, or squared error) and correct predictions (0/1)."""
    import tensorflow as tf

    if config.model.head == "regression":
        return tf.math.squared_difference(raw, labels), tf.zeros_like(raw)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=raw)
    return loss, tf.cast(tf.equal(tf.argmax(raw, axis=1), labels), tf.float32)


def _fit(sess, built: _TrainGraph, config: PipelineConfig) -> dict:
    """Returns the train metrics of running the train loop until the steps or epochs are done.

    Each run takes up to STEPS_PER_RUN steps and ends at the next `log_every_steps` step; the
    loop hands back each step's loss and counts, so the metrics are those of single steps.
    """
    training = config.training
    steps_per_run = STEPS_PER_RUN  # read at call time: tests change it
    sess.run(built.train_iterator.initializer)
    recent: collections.deque = collections.deque(maxlen=_RUNNING_STEPS)
    step, seen, started = 0, 0, time.perf_counter()
    while training.steps is None or step < training.steps:
        wanted = min(steps_per_run, training.log_every_steps - step % training.log_every_steps)
        if training.steps is not None:
            wanted = min(wanted, training.steps - step)
        run = sess.run(
            built.train_run, feed_dict={built.max_steps: wanted, built.learning_rate: training.learning_rate}
        )
        done = int(run["steps"])
        if done == 0 and step == 0:
            raise NoDataError("the train split is empty: no example to train on")
        for loss, correct, count in zip(
            run["loss"][:done], run["correct"][:done], run["count"][:done], strict=True
        ):
            step, seen = step + 1, seen + int(count)
            recent.append((float(loss), float(correct), int(count)))
        if done and (step % training.log_every_steps == 0 or step == training.steps):
            elapsed = time.perf_counter() - started
            log.info("step %d loss=%.4f (%.0f examples/s)", step, recent[-1][0], seen / max(elapsed, 1e-9))
            failpoint("train.loop")
        if done < wanted:
            break  # the epochs are done
    seconds = time.perf_counter() - started
    loss = float(np.mean([r[0] for r in recent]))
    if not np.isfinite(loss):
        raise QualityGateError("train_loss", loss, "a finite value (lower the learning rate)")
    metrics = {
        "train_loss": round(loss, 6),
        "train_steps": step,
        "train_examples_seen": seen,
        "train_seconds": round(seconds, 3),
        "examples_per_second": round(seen / max(seconds, 1e-9), 1),
    }
    if config.model.head == "classification":
        metrics["train_accuracy"] = round(sum(r[1] for r in recent) / max(sum(r[2] for r in recent), 1), 6)
    return metrics


def _evaluate(sess, built: _TrainGraph, config: PipelineConfig) -> dict:
    """Returns the held-out metrics of one pass over the cached held-out rows, overall and by slice."""
    import tensorflow as tf

    sess.run(built.eval_iterator.initializer)
    totals = dict.fromkeys(built.eval_sums, 0.0)
    slices: dict[str, dict[str, dict[str, float]]] = {name: {} for name in built.slice_sums}
    while True:
        try:
            sums, by_slice = sess.run([built.eval_sums, built.slice_sums])
        except tf.errors.OutOfRangeError:
            break
        for key, value in sums.items():
            totals[key] += float(value)
        for name, found in by_slice.items():
            for index, key in enumerate(found["keys"]):
                kept = slices[name].setdefault(key.decode("utf-8", "backslashreplace"), {})
                for sum_name, values in found.items():
                    if sum_name != "keys":
                        kept[sum_name] = kept.get(sum_name, 0.0) + float(values[index])
    count = int(totals["count"])
    return {
        "metrics": {"eval_examples": count, **_metrics_of(totals, config)},
        "parsed": int(totals["parsed"]),
        "slices": {
            name: {
                key: {"examples": int(sums["count"]), **_metrics_of(sums, config)}
                for key, sums in sorted(found.items())
            }
            for name, found in slices.items()
        },
    }


def _metrics_of(totals: dict, config: PipelineConfig) -> dict:
    """Returns the held-out metrics of summed losses and counts (none for no example)."""
    count = int(totals["count"])
    if not count:
        return {}
    if config.model.head == "regression":
        mse = totals["loss"] / count
        return {
            "eval_loss": round(mse, 6),
            "eval_rmse": round(mse**0.5, 6),
            "eval_mae": round(totals["abs_error"] / count, 6),
        }
    return {
        "eval_accuracy": round(totals["correct"] / count, 6),
        "eval_loss": round(totals["loss"] / count, 6),
    }


def slice_keys(config: PipelineConfig, spec) -> list[str] | None:
    """Returns the names of a bucketed slice's keys (`< 40`, `40 .. 60`, `>= 60`); None if by value."""
    if spec.boundaries is None:
        return None
    edges = [f"{b:g}" for b in spec.boundaries]
    inner = [f"{low} .. {high}" for low, high in itertools.pairwise(edges)]
    return [f"< {edges[0]}", *inner, f">= {edges[-1]}"]


def _slice_sums(config: PipelineConfig, features: dict, labels, loss, correct) -> dict:
    """Returns, per declared slice, the graph tensors of an eval batch's keys and their summed losses."""
    import tensorflow as tf

    sums = {}
    for spec in config.quality.slices:
        if spec.by == "label":
            value = labels
            if config.model.class_names and spec.boundaries is None:
                value = tf.gather(tf.constant(list(config.model.class_names)), labels)
        else:
            value = tf.reshape(features[spec.by], [-1])
        names = slice_keys(config, spec)
        if names is not None:
            bucket = tf.searchsorted(
                tf.constant(spec.boundaries, tf.float64), tf.cast(value, tf.float64), side="right"
            )
            key = tf.gather(tf.constant(names), bucket)
        elif value.dtype == tf.string:
            key = value
        else:
            key = tf.strings.as_string(value)
        keys, index = tf.unique(key)
        per_key = {
            "count": tf.ones_like(loss),
            "loss": loss,
            "correct": correct,
        }
        if config.model.head == "regression":
            per_key["abs_error"] = tf.sqrt(loss)
        sums[spec.by] = {
            "keys": keys,
            **{name: tf.math.unsorted_segment_sum(v, index, tf.size(keys)) for name, v in per_key.items()},
        }
    return sums
