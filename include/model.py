"""The serving graph: `tf.Example` parse -> features -> a graph builder -> scores and classes.

Reproduces TensorFlow Serving's tutorial exporter (`mnist_saved_model.py`) in TF1 graph mode.
A graph builder is a function `(x, num_classes, model_config) -> logits`; two ship here
(`softmax`, the tutorial's model, and `mlp`), and `package.module:function` names a user's own.
TensorFlow is imported inside functions only, so this module is cheap to import.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from include.config import ModelConfig, PipelineConfig
from include.errors import ConfigError

GraphBuilder = Callable[[Any, int, ModelConfig], Any]


@dataclass(frozen=True)
class ServingGraph:
    """Handles on the tensors of one built serving graph (all in the same tf.Graph)."""

    graph: Any
    serialized_examples: Any  # string [batch]: serialized tf.Example, the classify input
    features: Any  # float32 [batch, num_features]: the predict input, fed directly in training
    scores: Any  # float32 [batch, num_classes]: softmax probabilities
    top_scores: Any  # float32 [batch, num_classes]: scores sorted high to low (classify output)
    top_classes: Any  # string [batch, num_classes]: class names in the order of top_scores
    model_variables: list  # what the checkpoint must restore for serving
    logits: Any = None  # float32 [batch, num_classes]: pre-softmax scores
    # Training only (None in a serving-only graph), never part of a signature:
    labels: Any = None  # int64 [batch]
    loss: Any = None
    train_op: Any = None
    learning_rate: Any = None  # float32 scalar placeholder, defaults to the YAML value

    def tensor(self, name: str) -> Any:
        """Returns the model tensor a signature names in the YAML (`tensor:`, see MODEL_TENSORS)."""
        tensors = {
            "examples": self.serialized_examples,
            "features": self.features,
            "logits": self.logits,
            "scores": self.scores,
            "top_scores": self.top_scores,
            "top_classes": self.top_classes,
        }
        if tensors.get(name) is None:
            raise KeyError(
                f"the serving graph has no model tensor {name!r} (expected one of {sorted(tensors)})"
            )
        return tensors[name]


def softmax(x, num_classes: int, model: ModelConfig):
    """Returns the logits of the tutorial's softmax regression (zero-initialised W and b)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    num_features = int(x.shape[-1])
    w = v1.get_variable("weights", [num_features, num_classes], initializer=v1.zeros_initializer())
    b = v1.get_variable("biases", [num_classes], initializer=v1.zeros_initializer())
    return tf.matmul(x, w) + b


def mlp(x, num_classes: int, model: ModelConfig):
    """Returns the logits of a ReLU multi-layer perceptron with `model.hidden_units` layers."""
    import tensorflow as tf

    v1 = tf.compat.v1
    hidden = x
    for i, units in enumerate(model.hidden_units or (64,)):
        with v1.variable_scope(f"hidden_{i}"):
            w = v1.get_variable(
                "weights", [int(hidden.shape[-1]), units], initializer=v1.glorot_uniform_initializer()
            )
            b = v1.get_variable("biases", [units], initializer=v1.zeros_initializer())
            hidden = tf.nn.relu(tf.matmul(hidden, w) + b)
    with v1.variable_scope("logits"):
        w = v1.get_variable(
            "weights", [int(hidden.shape[-1]), num_classes], initializer=v1.glorot_uniform_initializer()
        )
        b = v1.get_variable("biases", [num_classes], initializer=v1.zeros_initializer())
        return tf.matmul(hidden, w) + b


BUILTIN_BUILDERS: dict[str, GraphBuilder] = {"softmax": softmax, "mlp": mlp}


def resolve_builder(config: PipelineConfig) -> GraphBuilder:
    """Returns the graph builder named by `model.builder` (built-in name or module:function)."""
    name = config.model.builder
    if name in BUILTIN_BUILDERS:
        return BUILTIN_BUILDERS[name]
    module_name, _, attr = name.partition(":")
    source = str(config.source_path or "<config>")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(source, [f"model.builder: cannot import {name!r}: {err}"]) from None
    if not callable(builder):
        raise ConfigError(source, [f"model.builder: {name!r} is not callable"])
    return builder


def class_names(model: ModelConfig) -> list[str]:
    """Returns the label strings served by the classify signature ("0".."n-1" by default)."""
    return list(model.class_names) if model.class_names else [str(i) for i in range(model.num_classes)]


def _class_names_initializer(tf, names: list[str]):
    """Returns an index -> class name table initializer with a content-derived shared name.

    TensorFlow names such tables `hash_table_<uuid4>` by default, which would make two exports
    of the same checkpoint differ byte for byte and defeat idempotent republishing.
    """
    shared_name = "class_names_" + hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]

    class _Initializer(tf.lookup.KeyValueTensorInitializer):
        @property
        def _shared_name(self) -> str:
            return shared_name

    return _Initializer(keys=tf.range(len(names), dtype=tf.int64), values=tf.constant(names))


def build_serving_graph(config: PipelineConfig, *, with_training: bool = False) -> ServingGraph:
    """Returns a new tf.Graph holding a pipeline's serving graph (plus training ops if asked).

    The exported graph is built without training ops, so the SavedModel holds only the model's
    own variables (no optimizer slots, no global step).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    model = config.model
    builder = resolve_builder(config)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(config.training.seed)
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        feature_spec = {config.data.feature_key: tf.io.FixedLenFeature([model.num_features], tf.float32)}
        parsed = v1.parse_example(serialized, feature_spec)
        features = tf.identity(parsed[config.data.feature_key], name="x")
        with v1.variable_scope("model"):
            logits = builder(features, model.num_classes, model)
        model_variables = v1.global_variables()
        scores = tf.nn.softmax(logits, name="y")
        top_scores, indices = tf.nn.top_k(scores, model.num_classes)
        table = v1.lookup.StaticHashTable(
            _class_names_initializer(tf, class_names(model)), default_value="UNKNOWN"
        )
        top_classes = table.lookup(tf.cast(indices, tf.int64))
        if not with_training:
            return ServingGraph(
                graph, serialized, features, scores, top_scores, top_classes, model_variables, logits
            )
        labels = v1.placeholder(tf.int64, shape=[None], name="labels")
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss"
        )
        learning_rate = v1.placeholder_with_default(
            tf.constant(config.training.learning_rate, tf.float32), shape=[], name="learning_rate"
        )
        if config.training.optimizer == "adam":
            optimizer = v1.train.AdamOptimizer(learning_rate)
        else:
            optimizer = v1.train.GradientDescentOptimizer(learning_rate)
        train_op = optimizer.minimize(loss, global_step=v1.train.get_or_create_global_step())
    return ServingGraph(
        graph=graph,
        serialized_examples=serialized,
        features=features,
        scores=scores,
        top_scores=top_scores,
        top_classes=top_classes,
        model_variables=model_variables,
        logits=logits,
        labels=labels,
        loss=loss,
        train_op=train_op,
        learning_rate=learning_rate,
    )
