"""The Keras model of the `diabetes_keras` example pipeline: a template for your own Keras builder.

A Keras builder is `function(features, model) -> keras.Model`: `features` is the YAML's
`features:` block ({name: FeatureSpec with dtype, shape, default, vocabulary}) and `model` its
`model:` block. The Keras model takes {feature name: tensor [batch, *shape]} and returns, for
`head: regression`, one float per example ([batch] or [batch, 1]); for `head: classification`,
logits [batch, num_classes] (no softmax: the pipeline adds it). The pipeline builds it inside a
TF1 graph, trains it there and exports it with SavedModelBuilder, so:

- use layers that need no `adapt()`: give Normalization its mean and variance, StringLookup its
  vocabulary (with `output_mode="int"` and CategoryEncoding for one-hot);
- import keras inside the function: the DAG files that import this module must stay cheap.
"""

from __future__ import annotations

#: Mean and variance of the numeric features over the whole diabetes data set (scikit-learn's
#: unscaled copy), computed once: Normalization layers need them up front.
NUMERIC_STATS = {
    "age": (48.518, 171.458),
    "bmi": (26.376, 19.476),
    "bp": (94.647, 190.872),
    "s1": (189.140, 1195.007),
    "s2": (115.439, 922.863),
    "s3": (49.788, 166.915),
    "s4": (4.070, 1.661),
    "s5": (4.641, 0.272),
    "s6": (91.260, 131.867),
}
#: The mean disease progression: the output layer starts there instead of at 0.
TARGET_MEAN = 152.133


def build_model(features, model):
    """Returns a small regression network over the numeric features and the one-hot `sex`."""
    import keras

    inputs = {
        name: keras.Input(shape=spec.shape, name=name, dtype=spec.dtype) for name, spec in features.items()
    }
    numeric = [name for name, spec in features.items() if spec.dtype == "float32"]
    columns = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[name]) for name in numeric])
    normalized = keras.layers.Normalization(
        mean=[NUMERIC_STATS[name][0] for name in numeric],
        variance=[NUMERIC_STATS[name][1] for name in numeric],
    )(columns)
    vocabulary = list(features["sex"].vocabulary)
    sex = keras.layers.StringLookup(vocabulary=vocabulary, name="sex_index")(inputs["sex"])
    sex = keras.layers.CategoryEncoding(num_tokens=len(vocabulary) + 1, output_mode="one_hot")(sex)
    hidden = keras.layers.Concatenate()([normalized, sex])
    for units in model.hidden_units or (32,):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    output = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(TARGET_MEAN))(hidden)
    return keras.Model(inputs=inputs, outputs=output, name="diabetes")
