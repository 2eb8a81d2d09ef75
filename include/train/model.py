"""The model: a builder over the declared features, a head, and the serving graph around them.

The serving graph reproduces TensorFlow Serving's tutorial exporter (`mnist_saved_model.py`) in
TF1 graph mode: a string placeholder of serialized `tf.Example`s, parsed with the declared
features' spec, into the model, into the head's outputs. Three kinds of builder make the model:

- the built-ins `softmax` (the tutorial's model) and `mlp`, TF1 graph functions;
- a user's TF1 graph function `package.module:function(x, num_classes, model_config) -> logits`,
  where `x` is every feature as one float32 [batch, width] tensor (see features.dense_input);
- a user's Keras 3 builder `package.module:function(features, model_config) -> keras.Model`,
  a model taking {feature name: tensor} and returning logits [batch, num_classes] (or one float
  per example for regression). Its layers are built inside the same graph, so the SavedModel is
  written by SavedModelBuilder like every other model.

TensorFlow is imported inside functions only, so this module is cheap to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from include.config import ModelConfig, PipelineConfig
from include.errors import ConfigError, ModelBuilderError, PipelineError
from include.train.features import dense_input, parse_spec

GraphBuilder = Callable[[Any, int, ModelConfig], Any]

#: Ops that change a variable: those a Keras layer creates while called in training (a
#: BatchNormalization's moving statistics, a Dropout's seed) run with every train step.
_STATE_UPDATES = {"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"}


@dataclass(frozen=True)
class ServingGraph:
    """Handles on the tensors of one built serving graph (all in the same tf.Graph)."""

    graph: Any
    serialized_examples: Any  # string [batch]: serialized tf.Example, the classify/regress input
    features: dict  # {name: tensor} parsed from the examples; predict signatures feed these
    outputs: dict  # the head's outputs: logits, scores, top_scores, top_classes | predictions
    model_variables: dict  # {checkpoint name: variable}: what the checkpoint holds and serving restores

    def tensor(self, name: str) -> Any:
        """Returns the model tensor a signature names in the YAML (`tensor:`, see MODEL_TENSORS)."""
        if name == "examples":
            return self.serialized_examples
        if name.startswith("features.") and name.removeprefix("features.") in self.features:
            return self.features[name.removeprefix("features.")]
        if name in self.outputs:
            return self.outputs[name]
        known = ["examples", *(f"features.{f}" for f in self.features), *self.outputs]
        raise KeyError(f"the serving graph has no model tensor {name!r} (expected one of {known})")


@dataclass
class Network:
    """A model applied to feature tensors, possibly several times in one graph (shared weights)."""

    config: PipelineConfig
    builder: Callable
    keras: bool
    _keras_model: Any = None
    _graph_variables: dict = field(default_factory=dict)

    def __call__(self, features: dict, *, training: bool) -> Any:
        """Returns the model's raw output on `features`: logits [batch, classes] or predictions [batch]."""
        import tensorflow as tf

        v1 = tf.compat.v1
        model = self.config.model
        outputs = model.num_classes if model.head == "classification" else 1
        if self.keras:
            if self._keras_model is None:
                with user_code(self.config, "building the Keras model"):
                    keras_model = self.builder(dict(self.config.features), model)
                _check_keras_model(keras_model, self.config)
                self._keras_model = keras_model
            inputs = {name: features[name] for name in self.config.features}
            with user_code(self.config, "calling the Keras model on the declared features"):
                raw = self._keras_model(inputs, training=training)
        else:
            x = dense_input(features, self.config)
            builtin = model.builder in BUILTIN_BUILDERS
            calling = (
                contextlib.nullcontext() if builtin else user_code(self.config, "building the model graph")
            )
            with v1.variable_scope("model", reuse=v1.AUTO_REUSE), calling:
                raw = self.builder(x, outputs, model)
            if not self._graph_variables:
                self._graph_variables = {v.op.name: v for v in v1.global_variables() if _in_model_scope(v)}
        raw = tf.convert_to_tensor(raw)
        if model.head == "regression":
            return tf.reshape(raw, [-1])
        return raw

    def trainable_variables(self) -> list | None:
        """Returns the variables the optimizer updates (None: every trainable graph variable)."""
        if self.keras:
            return [w.value for w in self._keras_model.trainable_weights]
        return None

    def variables(self) -> dict:
        """Returns {checkpoint name: variable} of the model's weights (after the first call)."""
        if self.keras:
            return {f"model/{w.path}": w.value for w in self._keras_model.weights}
        return dict(self._graph_variables)


@contextlib.contextmanager
def user_code(config: PipelineConfig, doing: str) -> Iterator[None]:
    """Turns an exception of the user's `model.builder` code into a permanent ModelBuilderError.

    Wrap only the call into user code: a retry runs the same code and fails the same way. Errors
    of the machine pass through unchanged, still retried, with a note naming the builder: out of
    memory (MemoryError, TensorFlow's ResourceExhaustedError), an OSError (a disk, a mount: even
    the builder's own vocabulary file may be back on the next try), TensorFlow's transient
    errors; and so do the project's own PipelineErrors, which already say whether they are permanent.
    """
    source = str(config.source_path or "<config>")
    try:
        yield
    except PipelineError:
        raise
    except Exception as err:
        if isinstance(err, _machine_errors()):
            err.add_note(f"raised by model.builder {config.model.builder!r} of {source} while {doing}")
            raise
        hint = ""
        if isinstance(err, KeyError) or "Missing data for input" in str(err):
            hint = f" (the YAML's features: declares {list(config.features)})"
        raise ModelBuilderError(source, config.model.builder, doing, err, hint) from err


def _machine_errors() -> tuple[type[BaseException], ...]:
    """Returns the errors of the machine, not of the code: a retry may succeed."""
    import tensorflow as tf

    return (
        OSError,
        MemoryError,
        tf.errors.ResourceExhaustedError,
        tf.errors.UnavailableError,
        tf.errors.AbortedError,
        tf.errors.DeadlineExceededError,
    )


def _in_model_scope(variable) -> bool:
    """Returns whether a graph variable was made by a graph builder (in the `model/` scope)."""
    return variable.op.name.startswith("model/")


def _check_keras_model(keras_model, config: PipelineConfig) -> None:
    """Raises ConfigError unless a Keras builder returned a model with the head's output width."""
    import keras

    source = str(config.source_path or "<config>")
    name = config.model.builder
    if not isinstance(keras_model, keras.Model):
        got = type(keras_model).__name__
        raise ConfigError(source, [f"model.builder: {name!r} returned {got}, expected a keras.Model"])
    width = config.model.num_classes if config.model.head == "classification" else 1
    shape = tuple(keras_model.output_shape) if not isinstance(keras_model.output_shape, list) else None
    if shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and shape[-1] != width):
        raise ConfigError(
            source,
            [f"model.builder: {name!r} outputs shape {keras_model.output_shape}, expected (None, {width})"],
        )


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


def resolve_builder(config: PipelineConfig) -> tuple[Callable, bool]:
    """Returns the builder named by `model.builder` and whether it is a Keras builder.

    A user's builder is a Keras builder when it takes two parameters (features, model config)
    and a TF1 graph function when it takes three (x, num_classes, model config).
    """
    import inspect

    name = config.model.builder
    if name in BUILTIN_BUILDERS:
        return BUILTIN_BUILDERS[name], False
    module_name, _, attr = name.partition(":")
    source = str(config.source_path or "<config>")
    with user_code(config, "importing its module"):  # a module that fails as it runs
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(source, [f"model.builder: cannot import {name!r}: {err}"]) from None
    if not callable(builder):
        raise ConfigError(source, [f"model.builder: {name!r} is not callable"])
    try:
        arity = len(inspect.signature(builder).parameters)
    except (TypeError, ValueError):
        arity = 0
    if arity not in (2, 3):
        raise ConfigError(
            source,
            [
                f"model.builder: {name!r} takes {arity} parameters, expected 2 (features, model: a Keras "
                "builder) or 3 (x, num_classes, model: a TF1 graph function)"
            ],
        )
    return builder, arity == 2


def new_network(config: PipelineConfig) -> Network:
    """Returns a fresh Network for `config` (call it inside the graph it belongs to).

    Keras names layers with process-wide counters: they are reset first, so the same config
    always yields the same weight names (training, validation and export build it separately).
    """
    builder, is_keras = resolve_builder(config)
    if is_keras:
        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(config.training.seed)
    return Network(config, builder, is_keras)


def class_names(model: ModelConfig) -> list[str]:
    """Returns the label strings served by the classify signature ("0".."n-1" by default)."""
    return list(model.class_names) if model.class_names else [str(i) for i in range(model.num_classes or 0)]


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


def head_outputs(raw, config: PipelineConfig) -> dict:
    """Returns the named output tensors of the head on the model's raw output."""
    import tensorflow as tf

    v1 = tf.compat.v1
    model = config.model
    if model.head == "regression":
        return {"predictions": tf.identity(raw, name="predictions")}
    scores = tf.nn.softmax(raw, name="y")
    top_scores, indices = tf.nn.top_k(scores, model.num_classes)
    table = v1.lookup.StaticHashTable(
        _class_names_initializer(tf, class_names(model)), default_value="UNKNOWN"
    )
    return {
        "logits": raw,
        "scores": scores,
        "top_scores": top_scores,
        "top_classes": table.lookup(tf.cast(indices, tf.int64)),
    }


def build_serving_graph(config: PipelineConfig) -> ServingGraph:
    """Returns a new tf.Graph holding a pipeline's serving graph (no training ops, no optimizer state)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    network = new_network(config)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(config.training.seed)
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(serialized, parse_spec(config))
        features = {name: tf.identity(parsed[name], name=name) for name in config.features}
        outputs = head_outputs(network(features, training=False), config)
    _name_tables_stably(graph, config.model.name)
    return ServingGraph(graph, serialized, features, outputs, network.variables())


def _name_tables_stably(graph, model_name: str) -> None:
    """Gives the lookup tables a Keras layer made (StringLookup, ...) names derived from the graph.

    TensorFlow names a table `hash_table_<uuid4>` unless told otherwise, so two exports of the
    same checkpoint would differ byte for byte and a rerun of a date could not republish as a no-op.
    """
    from tensorflow.core.framework import attr_value_pb2

    for op in graph.get_operations():
        if "shared_name" not in op.node_def.attr or not op.type.endswith("HashTableV2"):
            continue
        if op.get_attr("shared_name").decode().startswith("hash_table_"):
            stable = f"{model_name}/{op.name}".encode()
            op._set_attr("shared_name", attr_value_pb2.AttrValue(s=stable))


def state_updates(graph, since: int) -> list:
    """Returns the variable updates among the ops added to `graph` after its first `since` ops.

    Variable initializers are not updates: they run once, by global_variables_initializer.
    """
    import tensorflow as tf

    with graph.as_default():
        initializers = {v.initializer.name for v in tf.compat.v1.global_variables()}
    return [
        op
        for op in graph.get_operations()[since:]
        if op.type in _STATE_UPDATES and op.name not in initializers
    ]
