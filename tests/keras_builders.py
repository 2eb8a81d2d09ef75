"""Model builders a test YAML names as `model.builder: tests.keras_builders:<function>`.

Good ones: Keras 3 builders (features, model) -> keras.Model over a float feature `num` and a
string feature `color` (StringLookup to an index, then a one-hot CategoryEncoding: StringLookup's
own one_hot mode does not build in a TF1 graph), and a TF1 graph function (x, num_classes, model).
Bad ones: the wrong number of parameters, something that is not a keras.Model, the wrong width,
new variables on every call; and builders whose own code raises, as they build the model or as
it is called on the features.
"""

from __future__ import annotations


def _inputs_and_hidden(features, model):
    """Returns ({name: keras.Input}, the hidden layer over every feature, one-hot strings included)."""
    import keras

    inputs = {
        name: keras.Input(shape=spec.shape, name=name, dtype=spec.dtype) for name, spec in features.items()
    }
    columns = []
    for name, spec in features.items():
        if spec.dtype == "string":
            vocabulary = list(spec.vocabulary)
            index = keras.layers.StringLookup(vocabulary=vocabulary, name=f"{name}_index")(inputs[name])
            columns.append(
                keras.layers.CategoryEncoding(num_tokens=len(vocabulary) + 1, output_mode="one_hot")(index)
            )
        else:
            columns.append(keras.layers.Reshape((spec.width,))(keras.ops.cast(inputs[name], "float32")))
    hidden = keras.layers.Concatenate()(columns) if len(columns) > 1 else columns[0]
    for units in model.hidden_units or (16,):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    return inputs, hidden


def classifier(features, model):
    """Returns a Keras classifier: logits [batch, num_classes] over every declared feature."""
    import keras

    inputs, hidden = _inputs_and_hidden(features, model)
    return keras.Model(inputs=inputs, outputs=keras.layers.Dense(model.num_classes)(hidden), name="colors")


def normalized_classifier(features, model):
    """Returns a classifier with BatchNormalization and Dropout: layers whose training call changes state."""
    import keras

    inputs, hidden = _inputs_and_hidden(features, model)
    hidden = keras.layers.BatchNormalization(momentum=0.9)(hidden)
    hidden = keras.layers.Dropout(0.2, seed=1)(hidden)
    return keras.Model(inputs=inputs, outputs=keras.layers.Dense(model.num_classes)(hidden), name="colors")


def regressor(features, model):
    """Returns a Keras regressor: one float [batch, 1] per example over every declared feature."""
    import keras

    inputs, hidden = _inputs_and_hidden(features, model)
    return keras.Model(inputs=inputs, outputs=keras.layers.Dense(1)(hidden), name="target")


def graph_function(x, num_classes: int, model):
    """Returns the logits of a one-layer TF1 graph model over the dense features (the older contract)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    w = v1.get_variable("w", [int(x.shape[-1]), num_classes], initializer=v1.zeros_initializer())
    b = v1.get_variable("b", [num_classes], initializer=v1.zeros_initializer())
    return tf.matmul(x, w) + b


def fresh_variables(x, num_classes: int, model):
    """A TF1 graph function with a `tf.Variable`: a new one on every call, which training cannot reuse."""
    import tensorflow as tf

    w = tf.Variable(tf.zeros([int(x.shape[-1]), num_classes]), name="w")
    return tf.matmul(x, w)


def fresh_lazy_variables(x, num_classes: int, model):
    """The same with a callable initial value, which TensorFlow lets a loop create: still refused."""
    import tensorflow as tf

    w = tf.Variable(lambda: tf.zeros([int(x.shape[-1]), num_classes]), name="w")
    return tf.matmul(x, w)


def wrong_arity(features):
    """Takes one parameter: neither a Keras builder (2) nor a graph function (3)."""
    raise AssertionError("never called")


def not_a_model(features, model):
    """Returns a Keras layer, not a keras.Model."""
    import keras

    return keras.layers.Dense(model.num_classes or 1)


def wrong_width(features, model):
    """Returns a classifier with one output more than model.num_classes."""
    import keras

    inputs, hidden = _inputs_and_hidden(features, model)
    return keras.Model(inputs=inputs, outputs=keras.layers.Dense((model.num_classes or 1) + 1)(hidden))


def raising(features, model):
    """Raises inside the builder, as a bug in user code does."""
    raise RuntimeError("no model today")


def undeclared_feature(features, model):
    """Looks up a feature the YAML does not declare: a KeyError inside the builder."""
    return features["weight"]


def undeclared_input(features, model):
    """Returns a model with an input the YAML does not declare: Keras's "Missing data for input"."""
    import keras

    inputs, hidden = _inputs_and_hidden(features, model)
    weight = keras.Input(shape=(1,), name="weight", dtype="float32")
    hidden = keras.layers.Concatenate()([hidden, weight])
    outputs = keras.layers.Dense(model.num_classes)(hidden)
    return keras.Model(inputs={**inputs, "weight": weight}, outputs=outputs)


def failing_layer(features, model):
    """Returns a model whose custom layer raises when it is called on the features."""
    import keras

    class Failing(keras.layers.Layer):
        # With an output shape of its own, Keras builds the model without calling `call`.
        def compute_output_shape(self, input_shape):
            return input_shape

        def call(self, x):
            raise ValueError("this layer only takes even batches")

    inputs, hidden = _inputs_and_hidden(features, model)
    return keras.Model(inputs=inputs, outputs=keras.layers.Dense(model.num_classes)(Failing()(hidden)))


def raising_graph_function(x, num_classes: int, model):
    """A TF1 graph function that raises: the older contract's bugs are named the same way."""
    raise ZeroDivisionError("division by zero")


def unreadable_vocabulary(features, model):
    """Raises an OSError, as a builder whose vocabulary file is on a mount that is gone does."""
    raise FileNotFoundError(2, "No such file or directory", "/mnt/vocab/colors.txt")
