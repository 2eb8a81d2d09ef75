"""Training input: the files of a data window streamed through `tf.data`, checked, split by id.

Nothing here holds the data set in memory: the input pipeline interleaves the files in parallel,
parses whole batches, keeps the train or the held-out split (a stable hash of each example's id,
computed in the pipeline) and prefetches. When TensorFlow refuses a record, `diagnose` reads the
files again in plain Python to name the file, the record and the feature (DataError). Which files
a run reads, and how they are compressed, is include/train/window.py's job.

Files in a bucket (gs://, s3://: TensorFlow 2.21 opens no s3:// and its gs:// client talks to no
emulator) are streamed through fsspec instead of `TFRecordDataset`: `window.stream_records` reads
each object in 4 MiB requests, inflates it, cuts and checks its frames, and hands lists of up to
1024 records to `tf.data.Dataset.from_generator` (the Python work is per list, not per record).
Everything after the per-file reader is the same, so the same data gives the same examples in
the same order, and the same held-out split, from a bucket as from a local copy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from include.config import PipelineConfig
from include.errors import DataError
from include.storage.location import is_bucket
from include.train.features import EXAMPLE_LISTS, label_index, parse_spec
from include.train.window import READ_BUFFER, file_compressions, stream_records

_HASH_BUCKETS = 100
#: Records parsed per op in the train input (at least): see input_dataset.
_PARSE_BATCH = 1024
#: Records read from one file before the next file's turn (see input_dataset).
_FILE_BLOCK = 16


def held_out(ids, eval_percent: int):
    """Returns which example ids belong to the held-out split: stable across runs, dates and machines.

    A FarmHash fingerprint of the id's text, in 100 buckets; works on tensors and on arrays.
    """
    import tensorflow as tf

    text = ids if tf.as_dtype(ids.dtype) == tf.string else tf.strings.as_string(ids)
    return tf.strings.to_hash_bucket_fast(text, _HASH_BUCKETS) < eval_percent


def input_dataset(
    config: PipelineConfig,
    files: tuple[str, ...] | list[str],
    split: str,
    *,
    batch_size: int,
    epochs: int | None = 1,
    count: bool = False,
):
    """Returns a tf.data pipeline of (features, label) batches of one split of `files`.

    `epochs=None` repeats forever (training by steps). The train split shuffles files and
    examples (seeded); `training.deterministic` fixes the order of parallel reads. Every batch
    is checked: labels in range, float values finite (InvalidArgumentError, see `diagnose`).
    With `count`, each element also carries how many examples of both splits its batch parsed.
    """
    import tensorflow as tf

    training = config.training
    train = split == "train"
    autotune = tf.data.AUTOTUNE
    # Each file with its compression, found once per file here (not per record); a bucket object's
    # is found by its reader, from the bytes it streams anyway.
    names = tf.data.Dataset.from_tensor_slices((list(files), _compressions(files)))
    streamed = _in_bucket(files)
    if train:
        names = names.shuffle(len(files), seed=training.seed, reshuffle_each_iteration=True)
    # Up to 8 files read at once, 16 records of each in turn. The 16 are grouped inside each file's
    # reader, which the parallel interleave runs on its own thread: the stages after it handle
    # blocks, not records (the same order as 16-record blocks of records; 1.6-1.8x faster on 2
    # cores, docs/performance.md). A bucket object's lists of records are cut into the same blocks.
    blocks = names.interleave(
        lambda name, compression: _file_blocks(name, compression, streamed=streamed),
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=autotune,
        deterministic=training.deterministic,
    )
    # Parse whole batches (one op per batch, not per example); a little larger than a batch, since
    # the other split is dropped after the parse. The train split parses batches of at least
    # _PARSE_BATCH records: every per-element stage of tf.data runs on one thread, so the train
    # input shuffles whole parsed batches and then the examples within each, not records.
    parse_batch = max(1, batch_size * 100 // (100 - config.data.eval_percent))
    if train:
        parse_batch = max(parse_batch, _PARSE_BATCH)
    checked_parse = _checked_parser(config)

    def parse(serialized):
        features, label, ids = checked_parse(serialized)
        keep = held_out(ids, config.data.eval_percent)
        keep = keep if not train else tf.logical_not(keep)
        features = {name: tf.boolean_mask(value, keep) for name, value in features.items()}
        label = tf.boolean_mask(label, keep)
        if count:
            return features, label, tf.size(keep)
        return features, label

    batches = blocks.rebatch(parse_batch).map(
        parse, num_parallel_calls=autotune, deterministic=training.deterministic
    )
    if count:  # the held-out pass sums over batches of any size
        batches = batches.repeat(epochs)
    else:
        if train:
            buffer = -(-training.shuffle_buffer // parse_batch)  # about shuffle_buffer examples
            batches = batches.shuffle(buffer, seed=training.seed, reshuffle_each_iteration=True)
        # Repeat the parsed split, not the records: a split without any example then ends the input
        # (tf.data stops repeating a pass that yields nothing) instead of yielding empty batches forever.
        batches = batches.filter(lambda _, label: tf.size(label) > 0).repeat(epochs)
        if train:
            batches = batches.enumerate().map(
                _permuted(training.seed), num_parallel_calls=autotune, deterministic=training.deterministic
            )
        batches = batches.rebatch(batch_size)
    batches = batches.prefetch(autotune)
    options = tf.data.Options()
    options.deterministic = training.deterministic
    return batches.with_options(options)


def window_pass(
    config: PipelineConfig,
    files: tuple[str, ...] | list[str],
    partition_of: list[int],
    partitions: int,
    edges: dict[str, list[float]],
    *,
    batch_size: int,
    statistics: bool = True,
):
    """Returns a tf.data pipeline of one pass over every record of `files`: statistics and the held-out rows.

    Each element is `{"stats": batch_statistics(...), "held_out": per-partition held-out counts,
    "features": ..., "label": ...}` where features and label are the batch's held-out examples.
    `partition_of[i]` is the partition index of `files[i]`. Without `statistics`, elements hold only
    the held-out features and label, and float values are asserted finite. Else they are not asserted finite
    here (the statistics count NaN and infinity, and the data checks refuse them, naming the
    partition); labels are checked as in `input_dataset`.
    """
    import tensorflow as tf

    from include.train.statistics import batch_statistics

    training = config.training
    autotune = tf.data.AUTOTUNE
    names = tf.data.Dataset.from_tensor_slices(
        (list(files), _compressions(files), tf.constant(partition_of, tf.int32))
    )
    streamed = _in_bucket(files)

    def blocks_of(name, compression, partition):
        blocks = _file_blocks(name, compression, streamed=streamed)
        return blocks.map(lambda block: (block, tf.fill(tf.shape(block), partition)))

    blocks = names.interleave(
        blocks_of,
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=autotune,
        deterministic=training.deterministic,
    )
    spec = parse_spec(config, with_label=True, with_id=True)
    optional = {
        name: tf.io.RaggedFeature(tf.as_dtype(feature.dtype), row_splits_dtype=tf.int64)
        for name, feature in config.features.items()
        if feature.default is not None
    }

    checked_parse = _checked_parser(config)

    def parse_held_out(serialized, partition):
        features, label, ids = checked_parse(serialized)
        keep = held_out(ids, config.data.eval_percent)
        return {
            "features": {name: tf.boolean_mask(value, keep) for name, value in features.items()},
            "label": tf.boolean_mask(label, keep),
            "parsed": tf.size(keep),
        }

    def parse(serialized, partition):
        parsed = tf.io.parse_example(serialized, spec)
        present = {}
        if optional:
            ragged = tf.io.parse_example(serialized, optional)
            present = {name: value.row_lengths() > 0 for name, value in ragged.items()}
        label = _checked_label(parsed[config.label.key], config)
        features = {name: parsed[name] for name in config.features}
        stats = batch_statistics(config, features, present, label, partition, partitions, edges)
        keep = held_out(parsed[config.data.id_key], config.data.eval_percent)
        held = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int64), partition, partitions)
        return {
            "stats": stats,
            "held_out": held,
            "features": {name: tf.boolean_mask(value, keep) for name, value in features.items()},
            "label": tf.boolean_mask(label, keep),
        }

    batches = blocks.rebatch(batch_size).map(
        parse if statistics else parse_held_out,
        num_parallel_calls=autotune,
        deterministic=training.deterministic,
    )
    options = tf.data.Options()
    options.deterministic = training.deterministic
    return batches.with_options(options)


def _permuted(seed: int):
    """Returns a function shuffling the examples of the `index`-th parsed batch, (index, batch) -> batch.

    Stateless, seeded by (seed, index): the same order on every rerun, however many threads map
    it; a new order each epoch, since the index runs on across epochs.
    """
    import tensorflow as tf

    def permute(index, batch):
        features, label = batch
        keys = tf.random.stateless_uniform(
            tf.shape(label)[:1], seed=tf.stack([tf.constant(seed, tf.int64), index])
        )
        order = tf.argsort(keys)
        return {name: tf.gather(value, order) for name, value in features.items()}, tf.gather(label, order)

    return permute


def _checked_parser(config: PipelineConfig):
    """Returns a function parsing a batch of serialized examples into (features, label, ids), checked.

    The label must be in range (or a known class name) and float values finite; otherwise the
    batch fails with InvalidArgumentError, as it does for a missing feature or a wrong width.
    """
    import tensorflow as tf

    spec = parse_spec(config, with_label=True, with_id=True)
    floats = [name for name, feature in config.features.items() if feature.dtype == "float32"]

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        label = _checked_label(parsed[config.label.key], config)
        with tf.control_dependencies([_finite(parsed[name], name) for name in floats]):
            features = {name: tf.identity(parsed[name]) for name in config.features}
        return features, label, parsed[config.data.id_key]

    return parse


def _checked_label(label, config: PipelineConfig):
    """Returns the label tensor of a batch (class indices or floats), asserting each is valid."""
    import tensorflow as tf

    if config.label.type == "float":
        with tf.control_dependencies([_finite(label, config.label.key)]):
            return tf.identity(label)
    index = label_index(label, config)
    num_classes = config.model.num_classes
    valid = tf.reduce_all((index >= 0) & (index < num_classes))
    message = f"label {config.label.key!r} outside 0..{num_classes - 1} (or not in model.class_names)"
    with tf.control_dependencies([tf.debugging.Assert(valid, [message])]):
        return tf.identity(index)


def _finite(values, name: str):
    """Returns an assertion that a float tensor holds no NaN or infinity."""
    import tensorflow as tf

    return tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(values)), [f"feature {name!r} is NaN or infinite"]
    )


def held_out_sample(config: PipelineConfig, files: tuple[str, ...] | list[str], size: int) -> list[bytes]:
    """Returns the first `size` held-out examples of `files` (serialized), in file order."""
    import tensorflow as tf

    sample: list[bytes] = []
    id_spec = {config.data.id_key: tf.io.FixedLenFeature([], tf.as_dtype(config.data.id_dtype))}
    for batch in _records_in_order(files).batch(1024):
        ids = tf.io.parse_example(batch, id_spec)[config.data.id_key]
        chosen = batch.numpy()[held_out(ids, config.data.eval_percent).numpy()]
        sample.extend(chosen[: size - len(sample)].tolist())
        if len(sample) >= size:
            break
    return sample


def _records_in_order(files: tuple[str, ...] | list[str]):
    """Returns a tf.data pipeline of the records of `files`, file after file, each read as compressed."""
    import tensorflow as tf

    names = tf.data.Dataset.from_tensor_slices((list(files), _compressions(files)))
    streamed = _in_bucket(files)
    return names.flat_map(lambda name, kind: _file_records(name, kind, streamed=streamed))


def _in_bucket(files: tuple[str, ...] | list[str]) -> bool:
    """Returns whether `files` are bucket objects (a window's files are all local or all in one bucket)."""
    kinds = {is_bucket(file) for file in files}
    if len(kinds) > 1:
        raise ValueError(f"files of a local directory and of a bucket mixed: {list(files)[:4]} ...")
    return kinds == {True}


def _compressions(files: tuple[str, ...] | list[str]) -> list[str]:
    """Returns each local file's compression; "" for bucket objects (their readers find it)."""
    return [""] * len(files) if _in_bucket(files) else file_compressions(files)


def _file_blocks(name, compression, *, streamed: bool):
    """Returns a tf.data pipeline of one file's records in blocks of _FILE_BLOCK (input_dataset's reader)."""
    import tensorflow as tf

    if not streamed:
        return tf.data.TFRecordDataset(name, compression_type=compression, buffer_size=READ_BUFFER).batch(
            _FILE_BLOCK
        )
    return _streamed(name).rebatch(_FILE_BLOCK)  # = unbatch().batch(_FILE_BLOCK), without a per-record step


def _file_records(name, compression, *, streamed: bool):
    """Returns a tf.data pipeline of one file's records: TFRecordDataset, or a bucket object streamed."""
    import tensorflow as tf

    if not streamed:
        return tf.data.TFRecordDataset(name, compression_type=compression)
    return _streamed(name).unbatch()


def _streamed(name):
    """Returns a tf.data pipeline of the lists of records `stream_records` yields for one bucket object."""
    import tensorflow as tf

    return tf.data.Dataset.from_generator(
        _streamed_batches, args=(name,), output_signature=tf.TensorSpec([None], tf.string)
    )


class _RefusedObject(ValueError):
    """A bucket object the reader refused (its DataError's text): a ValueError, which TensorFlow
    reports as InvalidArgumentError, as TFRecordDataset reports damaged data, so training's
    `diagnose` then reads the files again and raises the DataError itself."""


def _streamed_batches(name: bytes):
    """Yields lists of the records of one bucket object (from_generator's side of stream_records)."""
    try:
        yield from stream_records(name.decode())
    except DataError as err:
        raise _RefusedObject(str(err)) from None


def write_sample(path: Path, examples: list[bytes]) -> None:
    """Writes serialized examples as JSON (base64), readable without TensorFlow."""
    path.write_text(json.dumps([base64.b64encode(e).decode() for e in examples]))


def read_sample(path: Path) -> list[bytes]:
    """Returns the serialized examples `write_sample` wrote."""
    return [base64.b64decode(e) for e in json.loads(Path(path).read_text())]


def diagnose(config: PipelineConfig, files: tuple[str, ...] | list[str]) -> None:
    """Raises DataError for the first record of `files` the declared features and label cannot read.

    Runs after the streaming input refused a batch: each file is parsed again on its own, fast,
    and the first one that fails is read record by record in plain Python, so the message names
    the file, the record index and the feature.
    """
    for file in files:
        if _parses(config, file):
            continue
        for index, record in _records(file):
            problem = example_problem(record, config)
            if problem:
                raise DataError(file, problem, index)


def _parses(config: PipelineConfig, file: str) -> bool:
    """Returns whether every record of one file parses and passes the checks of the input pipeline."""
    import tensorflow as tf

    checked_parse = _checked_parser(config)
    try:
        for _ in _records_in_order([file]).batch(4096).map(checked_parse):
            pass
    except (tf.errors.OpError, UnicodeDecodeError):  # the latter: a non-UTF-8 record quoted in the error
        return False
    return True


def _records(file: str) -> Iterator[tuple[int, bytes]]:
    """Yields (index, bytes) of each record of a TFRecord file; a damaged file is a DataError."""
    import tensorflow as tf

    if is_bucket(file):  # streamed in plain Python: its DataError names the object and the record
        index = 0
        for batch in stream_records(file):
            for record in batch:
                yield index, record
                index += 1
        return
    index = 0
    iterator = iter(_records_in_order([file]))
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(
                file, f"not a readable TFRecord file (truncated or corrupted): {err.message}", index
            ) from None
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as err:
            raise DataError(file, f"cannot read the file: {err.message}") from None
        yield index, record.numpy()
        index += 1


def example_problem(record: bytes, config: PipelineConfig) -> str | None:
    """Returns what makes one serialized record unreadable as a training example, None if nothing."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        features = example_pb2.Example.FromString(record).features.feature
    except DecodeError:
        return "not a tf.Example protocol buffer"
    expected = {name: (f.dtype, f.width, f.default is not None) for name, f in config.features.items()}
    label_dtype = {"class_index": "int64", "class_name": "string", "float": "float32"}[config.label.type]
    expected[config.label.key] = (label_dtype, 1, False)
    expected[config.data.id_key] = (config.data.id_dtype, 1, False)
    for name, (dtype, width, optional) in expected.items():
        if name not in features:
            if not optional:
                return f"feature {name!r} is missing (expected {width} {dtype} value(s))"
            continue
        kind = features[name].WhichOneof("kind")
        values = list(getattr(features[name], kind).value) if kind else []
        if kind != EXAMPLE_LISTS[dtype]:
            return f"feature {name!r} holds {kind or 'no list'}, expected {dtype} ({EXAMPLE_LISTS[dtype]})"
        if len(values) != width:
            return f"feature {name!r} holds {len(values)} values, expected {width}"
        if dtype == "float32" and not np.isfinite(values).all():
            return f"feature {name!r} holds NaN or infinite values"
    return _label_problem(features[config.label.key], config)


def _label_problem(feature, config: PipelineConfig) -> str | None:
    """Returns what is wrong with one example's label value, None if nothing."""
    key = config.label.key
    if config.label.type == "class_index":
        value = feature.int64_list.value[0]
        if not 0 <= value < config.model.num_classes:
            return f"label {key!r} is {value}, expected a class index in 0..{config.model.num_classes - 1}"
    elif config.label.type == "class_name":
        value = feature.bytes_list.value[0].decode("utf-8", "replace")
        if value not in (config.model.class_names or ()):
            return f"label {key!r} is {value!r}, expected one of model.class_names"
    return None
