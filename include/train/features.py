"""The declared features: how a `tf.Example` is parsed, encoded for the built-in builders, and checked.

One parse spec, built from the YAML's `features:` block, serves the training input (with the label
and id added), the serving graph (classify/regress parse the serialized examples TensorFlow
Serving sends) and the checks of held-out rows. TensorFlow is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from include.config import FeatureSpec, PipelineConfig

#: The tf.Example list each dtype lives in.
EXAMPLE_LISTS = {"float32": "float_list", "int64": "int64_list", "string": "bytes_list"}


def parse_spec(config: PipelineConfig, *, with_label: bool = False, with_id: bool = False) -> dict:
    """Returns the `tf.io.parse_example` spec of the declared features (plus label and id if asked)."""
    import tensorflow as tf

    spec = {name: _fixed_len(tf, feature) for name, feature in config.features.items()}
    if with_label:
        dtype = {"class_index": tf.int64, "class_name": tf.string, "float": tf.float32}[config.label.type]
        spec[config.label.key] = tf.io.FixedLenFeature([], dtype)
    if with_id:
        spec[config.data.id_key] = tf.io.FixedLenFeature([], tf.as_dtype(config.data.id_dtype))
    return spec


def _fixed_len(tf, feature: FeatureSpec):
    """Returns the FixedLenFeature of one declared feature (its default fills every value)."""
    dtype = tf.as_dtype(feature.dtype)
    default = None
    if feature.default is not None:
        value = feature.default.encode() if feature.dtype == "string" else feature.default
        default = np.full(
            feature.shape, value, dtype=object if feature.dtype == "string" else dtype.as_numpy_dtype
        )
    return tf.io.FixedLenFeature(list(feature.shape), dtype, default_value=default)


def dense_input(features: Mapping, config: PipelineConfig):
    """Returns the features as one float32 [batch, width] tensor, in declaration order (built-in builders).

    Numbers are flattened and cast to float32; a string feature becomes a one-hot vector over its
    vocabulary plus one slot for values outside it.
    """
    import tensorflow as tf

    parts = []
    for name, feature in config.features.items():
        value = features[name]
        if feature.dtype == "string":
            vocabulary = tf.constant(list(feature.vocabulary or ()))
            flat = tf.reshape(value, [-1, feature.width])
            matches = tf.equal(flat[..., None], vocabulary)  # [batch, width, vocabulary]
            known = tf.reduce_any(matches, axis=-1, keepdims=True)
            one_hot = tf.concat([tf.cast(matches, tf.float32), tf.cast(~known, tf.float32)], axis=-1)
            parts.append(tf.reshape(one_hot, [-1, feature.width * (len(feature.vocabulary or ()) + 1)]))
        else:
            parts.append(tf.reshape(tf.cast(value, tf.float32), [-1, feature.width]))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


def label_index(label, config: PipelineConfig):
    """Returns a class label as int64 class indices (class names are looked up; unknown ones are -1)."""
    import tensorflow as tf

    if config.label.type != "class_name":
        return label
    names = tf.constant(list(config.model.class_names or ()))
    matches = tf.equal(label[:, None], names[None, :])
    return tf.where(tf.reduce_any(matches, axis=1), tf.argmax(tf.cast(matches, tf.int32), axis=1), -1)


def feature_values(examples: Iterable[bytes], config: PipelineConfig) -> dict[str, np.ndarray]:
    """Returns {feature: array [rows, *shape]} of serialized tf.Examples, as the serving graph parses them.

    Plain protobuf, so it works inside a graph context too; a missing feature takes its default.
    """
    from tensorflow.core.example import example_pb2

    columns: dict[str, list] = {name: [] for name in config.features}
    for data in examples:
        present = example_pb2.Example.FromString(data).features.feature
        for name, feature in config.features.items():
            if name in present:
                values = list(getattr(present[name], EXAMPLE_LISTS[feature.dtype]).value)
            else:
                default = feature.default.encode() if isinstance(feature.default, str) else feature.default
                values = [default] * feature.width
            columns[name].append(values)
    dtypes = {"float32": np.float32, "int64": np.int64, "string": object}
    return {
        name: np.array(columns[name], dtype=dtypes[feature.dtype]).reshape(-1, *feature.shape)
        for name, feature in config.features.items()
    }


def request_examples(examples: Iterable[bytes], config: PipelineConfig) -> list[bytes]:
    """Returns the examples with only the declared features (what a client sends: no label, no id)."""
    from tensorflow.core.example import example_pb2

    kept = []
    for data in examples:
        example = example_pb2.Example.FromString(data)
        for key in list(example.features.feature):
            if key not in config.features:
                del example.features.feature[key]
        kept.append(example.SerializeToString(deterministic=True))
    return kept


def make_example(values: Mapping[str, object]) -> bytes:
    """Returns a serialized tf.Example of {key: value or values}: floats, ints, or str/bytes."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for key, value in values.items():
        items = np.asarray(value).reshape(-1).tolist()
        feature = example.features.feature[key]
        if items and isinstance(items[0], (str, bytes)):
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in items)
        elif items and isinstance(items[0], float):
            feature.float_list.value.extend(items)
        else:
            feature.int64_list.value.extend(int(v) for v in items)
    return example.SerializeToString(deterministic=True)
