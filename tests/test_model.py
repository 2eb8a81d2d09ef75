"""Models: user Keras 3 builders (classification and regression heads), TF1 graph functions, bad builders.

Each good model trains through `train_model` on a small data set of two declared features (a float
pair `num` and a string `color`), passes validation, is exported through SavedModelBuilder and
verified like every model; reruns with `deterministic: true` write byte-identical checkpoints.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from include.config import load_pipeline_config
from include.errors import ConfigError, ModelBuilderError
from include.savedmodel.export import export_savedmodel
from include.savedmodel.verify import verify_export
from include.train.features import make_example, request_examples
from include.train.training import train_model
from include.validate.checkpoint import validate_checkpoint
from tests.helpers import (
    assert_complete,
    checkpoint_outputs,
    eval_sample,
    example_raw,
    write_pipeline,
    write_records,
)

COLORS = ["red", "green", "blue"]
#: What the regression target adds for each color.
COLOR_OFFSET = {"red": 0.0, "green": 5.0, "blue": -5.0}
DAYS, PER_DAY = 3, 120
AS_OF = dt.date(2026, 10, 1 + DAYS)


def colors_row(i: int, rng) -> dict:
    """Returns one example: num (2 floats), color, a class label (the color) and a float target."""
    num = rng.uniform(-1, 1, size=2).round(4).astype(float).tolist()
    color = COLORS[i % 3]
    target = 3 * num[0] - 2 * num[1] + COLOR_OFFSET[color]
    return {"num": num, "color": color, "label": i % 3, "target": round(target, 4), "id": i}


@pytest.fixture(scope="module")
def colors_data(tmp_path_factory) -> Path:
    """Returns a data location of DAYS daily partitions of PER_DAY examples of `colors_row`."""
    root = tmp_path_factory.mktemp("colors") / "data"
    rng = np.random.default_rng(0)
    for day in range(DAYS):
        partition = root / f"dt=2026-10-{day + 1:02d}"
        partition.mkdir(parents=True)
        rows = [colors_row(i, rng) for i in range(day * PER_DAY, (day + 1) * PER_DAY)]
        write_records(partition / "part-00000.tfrecord", [make_example(row) for row in rows])
    return root


def colors_config(root: Path, data: Path, head: str = "classification", **changes):
    """Returns a pipeline over `colors_data`, a Keras builder for `head`; changes: {section: {key: value}}."""
    raw = example_raw()
    raw["name"] = f"colors_{head}"
    raw["data"]["location"] = str(data)
    raw["features"] = {
        "num": {"dtype": "float32", "shape": [2]},
        "color": {"dtype": "string", "vocabulary": COLORS},
    }
    raw["training"] = {
        "steps": 200,
        "batch_size": 32,
        "learning_rate": 0.05,
        "optimizer": "adam",
        "seed": 3,
        "log_every_steps": 1000,
        "deterministic": True,
        "shuffle_buffer": 1000,
    }
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    predict_inputs = {
        "num": {"dtype": "float32", "shape": [-1, 2]},
        "color": {"dtype": "string", "shape": [-1]},
    }
    if head == "classification":
        raw["label"] = {"key": "label", "type": "class_index"}
        raw["model"] = {"name": "colors", "builder": "tests.keras_builders:classifier", "num_classes": 3}
        raw["quality"] = {"min_accuracy": 0.8}
        raw["signatures"] = {
            "serving_default": {
                "method": "classify",
                "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
                "outputs": {
                    "classes": {"dtype": "string", "shape": [-1, 3]},
                    "scores": {"dtype": "float32", "shape": [-1, 3]},
                },
            },
            "predict_colors": {
                "method": "predict",
                "inputs": predict_inputs,
                "outputs": {"scores": {"dtype": "float32", "shape": [-1, 3]}},
            },
        }
    else:
        raw["label"] = {"key": "target", "type": "float"}
        raw["model"] = {"name": "target", "builder": "tests.keras_builders:regressor", "head": "regression"}
        raw["quality"] = {"min_accuracy": 0, "max_loss": 5.0}
        raw["signatures"] = {
            "serving_default": {
                "method": "regress",
                "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
                "outputs": {"outputs": {"dtype": "float32", "shape": [-1]}},
            },
            "predict_target": {
                "method": "predict",
                "inputs": predict_inputs,
                "outputs": {"value": {"dtype": "float32", "shape": [-1], "tensor": "predictions"}},
            },
        }
    for section, values in changes.items():
        raw[section].update(values)
    if "epochs" in changes.get("training", {}):
        raw["training"].pop("steps")
    return load_pipeline_config(write_pipeline(root / "pipelines", raw))


def train_export_verify(config, root: Path):
    """Returns (train result, validation verdict, export dir, verification) of the whole path of a run."""
    trained = train_model(config, AS_OF, root / "work")
    verdict = validate_checkpoint(config, trained.checkpoint, trained.metrics)
    export_dir = root / "export" / "1"
    export_savedmodel(config, trained.checkpoint, export_dir)
    assert_complete(export_dir)
    verification = verify_export(
        export_dir, config, eval_sample(trained.checkpoint), verdict["reference_outputs"]
    )
    return trained, verdict, export_dir, verification


def run_export(export_dir: Path, key: str, feeds: dict) -> dict:
    """Returns {output: array} of one signature of a SavedModel loaded in a TF1 session."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], str(export_dir))
        signature = meta.signature_def[key]
        return sess.run(
            {name: info.name for name, info in signature.outputs.items()},
            feed_dict={signature.inputs[name].name: value for name, value in feeds.items()},
        )


def test_keras_classifier_trains_exports_and_verifies(tmp_path, colors_data):
    """A Keras 3 classifier over a float and a string feature trains, validates, exports and verifies."""
    config = colors_config(tmp_path, colors_data)
    trained, verdict, export_dir, verification = train_export_verify(config, tmp_path)
    assert trained.metrics["eval_accuracy"] >= 0.9 and trained.metrics["train_steps"] == 200
    assert trained.data["train_examples"] + trained.data["eval_examples"] == DAYS * PER_DAY
    assert verdict["verdict"] == "passed"
    assert verdict["signatures"]["serving_default"]["method"] == "tensorflow/serving/classify"
    assert verdict["signatures"]["predict_colors"]["inputs"]["color"] == {"dtype": "string", "shape": [-1]}
    assert verification.signatures == 2 and verification.rows == 32 and verification.warmup_records == 2
    examples = [make_example({"num": [0.1, -0.2], "color": color}) for color in [*COLORS, "purple"]]
    classified = run_export(export_dir, "serving_default", {"inputs": np.array(examples, dtype=object)})
    assert [row[0].decode() for row in classified["classes"][:3]] == ["0", "1", "2"]  # the color's class
    assert classified["scores"].shape == (4, 3)  # an unknown color (out of vocabulary) still answers
    predicted = run_export(
        export_dir,
        "predict_colors",
        {
            "num": np.array([[0.1, -0.2]] * 4, np.float32),
            "color": np.array([*COLORS, "purple"], dtype=object),
        },
    )
    np.testing.assert_allclose(np.sort(predicted["scores"], axis=1)[:, ::-1], classified["scores"], rtol=1e-5)


def test_keras_regressor_trains_exports_and_verifies(tmp_path, colors_data):
    """A Keras 3 regressor trains with regression metrics; regress and predict answer the same floats."""
    config = colors_config(tmp_path, colors_data, "regression", training={"steps": 400})
    trained, verdict, export_dir, verification = train_export_verify(config, tmp_path)
    metrics = trained.metrics
    assert "eval_accuracy" not in metrics and "train_accuracy" not in metrics
    assert metrics["eval_loss"] < 1.0 and math.isclose(
        metrics["eval_rmse"], metrics["eval_loss"] ** 0.5, rel_tol=1e-3
    )
    assert 0 < metrics["eval_mae"] <= metrics["eval_rmse"] + 1e-6
    assert verdict["verdict"] == "passed"
    assert verdict["signatures"]["serving_default"]["method"] == "tensorflow/serving/regress"
    assert verification.signatures == 2 and verification.warmup_records == 2
    sample = request_examples(eval_sample(trained.checkpoint), config)
    regressed = run_export(export_dir, "serving_default", {"inputs": np.array(sample, dtype=object)})[
        "outputs"
    ]
    assert regressed.shape == (32,)
    np.testing.assert_allclose(
        regressed, checkpoint_outputs(config, trained.checkpoint, sample, "predictions"), atol=1e-5
    )
    feeds = {
        "num": np.array([[0.5, 0.5], [0.5, 0.5]], np.float32),
        "color": np.array(["green", "blue"], dtype=object),
    }
    green, blue = run_export(export_dir, "predict_target", feeds)["value"]
    assert 8 < green - blue < 12  # the model learned the colors' offsets (+5, -5)


def test_tf1_graph_function_with_three_params_still_trains_and_exports(tmp_path, colors_data):
    """A user's TF1 graph function (x, num_classes, model) trains on the dense features and exports."""
    config = colors_config(
        tmp_path,
        colors_data,
        model={"builder": "tests.keras_builders:graph_function"},
        training={"optimizer": "sgd", "learning_rate": 0.5},
    )
    trained, verdict, _, verification = train_export_verify(config, tmp_path)
    assert trained.metrics["eval_accuracy"] >= 0.9 and verdict["verdict"] == "passed"
    assert verification.signatures == 2


@pytest.mark.parametrize(
    ("builder", "head", "expected"),
    [
        (
            "wrong_arity",
            "classification",
            "takes 1 parameters, expected 2 (features, model: a Keras builder)",
        ),
        ("not_a_model", "classification", "returned Dense, expected a keras.Model"),
        ("wrong_width", "classification", "outputs shape (None, 4), expected (None, 3)"),
        ("wrong_width", "regression", "outputs shape (None, 2), expected (None, 1)"),
        ("fresh_variables", "classification", "must reuse its variables when called again (tf.compat.v1"),
        ("fresh_variables", "classification", "not tf.Variable); it made 'w' again"),
        ("fresh_lazy_variables", "classification", "not tf.Variable); it made ['model/w_1']"),
    ],
)
def test_a_bad_builder_is_a_config_error_naming_model_builder(tmp_path, colors_data, builder, head, expected):
    """The wrong arity, a non-Model, the wrong width, new variables per call: ConfigError at model.builder."""
    config = colors_config(tmp_path, colors_data, head, model={"builder": f"tests.keras_builders:{builder}"})
    with pytest.raises(ConfigError) as info:
        train_model(config, AS_OF, tmp_path / "work")
    message = str(info.value)
    assert f"model.builder: 'tests.keras_builders:{builder}'" in message and expected in message, message
    assert str(config.source_path) in message
    assert not (tmp_path / "work" / "checkpoint").exists()


@pytest.mark.parametrize(
    ("builder", "doing", "expected"),
    [
        (
            "raising",
            "building the Keras model",
            "RuntimeError while building the Keras model: no model today",
        ),
        (
            "undeclared_feature",
            "building the Keras model",
            "KeyError while building the Keras model: 'weight'",
        ),
        ("undeclared_input", "calling the Keras model", "Missing data for input"),
        ("failing_layer", "calling the Keras model", "ValueError while calling the Keras model"),
        ("raising_graph_function", "building the model graph", "ZeroDivisionError while building the model"),
    ],
)
def test_a_builder_that_raises_fails_once_naming_builder_and_yaml(
    tmp_path, colors_data, builder, doing, expected
):
    """A raise in the user's builder, at build or call time, is a permanent ModelBuilderError naming it."""
    config = colors_config(tmp_path, colors_data, model={"builder": f"tests.keras_builders:{builder}"})
    with pytest.raises(ModelBuilderError) as info:
        train_model(config, AS_OF, tmp_path / "work")
    error, message = info.value, str(info.value)
    assert error.permanent and isinstance(error, ConfigError) and error.doing.startswith(doing)
    assert f"model.builder: 'tests.keras_builders:{builder}' raised" in message and expected in message
    assert str(config.source_path) in message and error.path == str(config.source_path)
    assert "\x1b[" not in message
    if builder.startswith("undeclared"):
        assert "the YAML's features: declares ['num', 'color']" in message
    assert not (tmp_path / "work" / "checkpoint").exists()


def test_a_builder_module_that_raises_on_import_is_named(tmp_path, colors_data, monkeypatch):
    """A module that fails as it is imported is a ModelBuilderError too (a missing one: 'cannot import')."""
    (tmp_path / "broken_builder.py").write_text("raise RuntimeError('no GPU config found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = colors_config(tmp_path, colors_data, model={"builder": "broken_builder:build"})
    with pytest.raises(ModelBuilderError, match="raised RuntimeError while importing its module: no GPU"):
        train_model(config, AS_OF, tmp_path / "work")
    missing = colors_config(tmp_path, colors_data, model={"builder": "no_such_module:build"})
    with pytest.raises(ConfigError, match="cannot import 'no_such_module:build'") as info:
        train_model(missing, AS_OF, tmp_path / "work")
    assert not isinstance(info.value, ModelBuilderError)


def test_a_builder_error_fails_the_task_without_retry(tmp_path, colors_data):
    """Through the tasks' error handling a builder's raise is AirflowFailException: no retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from plugins.savedmodel_errors import fail_fast_on_permanent_errors

    config = colors_config(tmp_path, colors_data, model={"builder": "tests.keras_builders:raising"})
    with pytest.raises(AirflowFailException, match=r"tests\.keras_builders:raising") as info:
        with fail_fast_on_permanent_errors():
            train_model(config, AS_OF, tmp_path / "work")
    assert isinstance(info.value.__cause__, ModelBuilderError)
    assert isinstance(info.value.__cause__.__cause__, RuntimeError)


def test_a_builder_os_error_stays_retryable_and_names_the_builder(tmp_path, colors_data):
    """An OSError in the builder (a mount gone) passes through for a retry, noted with the builder."""
    config = colors_config(
        tmp_path, colors_data, model={"builder": "tests.keras_builders:unreadable_vocabulary"}
    )
    with pytest.raises(FileNotFoundError) as info:
        train_model(config, AS_OF, tmp_path / "work")
    assert any("tests.keras_builders:unreadable_vocabulary" in note for note in info.value.__notes__)


def checkpoint_files(checkpoint: str) -> dict[str, bytes]:
    """Returns {name: bytes} of a checkpoint's data shards and index."""
    prefix = Path(checkpoint)
    files = [*sorted(prefix.parent.glob(f"{prefix.name}.data-*")), prefix.with_name(f"{prefix.name}.index")]
    return {f.name: f.read_bytes() for f in files}


def test_deterministic_retraining_writes_byte_identical_checkpoints(tmp_path, colors_data):
    """Retraining a date with deterministic: true gives the same model.ckpt.data-* and .index bytes."""
    config = colors_config(tmp_path, colors_data, training={"steps": 60})
    first = train_model(config, AS_OF, tmp_path / "one")
    second = train_model(config, AS_OF, tmp_path / "two")
    files = checkpoint_files(first.checkpoint)
    assert any(name.startswith("model.ckpt.data-") for name in files) and "model.ckpt.index" in files
    assert checkpoint_files(second.checkpoint) == files
    assert second.metrics["eval_loss"] == first.metrics["eval_loss"]
    other_seed = colors_config(tmp_path, colors_data, training={"steps": 60, "seed": 4})
    assert checkpoint_files(train_model(other_seed, AS_OF, tmp_path / "three").checkpoint) != files


@pytest.mark.parametrize("epochs", [1, 2])
def test_epochs_train_whole_passes_over_the_train_split(tmp_path, colors_data, epochs):
    """`epochs: N` trains N passes: N x train_examples seen, in ceil(N x train_examples / batch) steps."""
    config = colors_config(tmp_path, colors_data, training={"epochs": epochs})
    result = train_model(config, AS_OF, tmp_path / "work")
    train_examples = result.data["train_examples"]
    assert result.metrics["train_examples_seen"] == epochs * train_examples
    assert result.metrics["train_steps"] == math.ceil(epochs * train_examples / 32)
    assert result.hyperparameters["epochs"] == epochs and result.hyperparameters["steps"] is None


def test_non_deterministic_training_uses_every_core_and_still_learns(tmp_path, colors_data):
    """deterministic: false runs the model math on all cores (intra-op threads 0) and trains as well."""
    from include.train.training import session_config

    assert session_config(True).intra_op_parallelism_threads == 1
    assert session_config(False).intra_op_parallelism_threads == 0
    config = colors_config(tmp_path, colors_data, training={"deterministic": False})
    assert train_model(config, AS_OF, tmp_path / "work").metrics["eval_accuracy"] >= 0.9


def test_steps_per_run_change_nothing_but_the_speed(tmp_path, colors_data, monkeypatch, caplog):
    """1 or 7 train steps per session.run (the in-graph loop): the same bytes, steps and log lines.

    The Keras model has BatchNormalization (moving statistics) and Dropout (a seed state): their
    updates run inside the loop with every step, as they did with one step per run.
    """
    import logging

    import tensorflow as tf

    import include.train.training as training

    builder = {"builder": "tests.keras_builders:normalized_classifier"}
    config = colors_config(
        tmp_path, colors_data, model=builder, training={"steps": 45, "log_every_steps": 10}
    )
    results, logged = {}, {}
    for per_run in (1, 7):
        monkeypatch.setattr(training, "STEPS_PER_RUN", per_run)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="include.train.training"):
            results[per_run] = train_model(config, AS_OF, tmp_path / f"per-run-{per_run}")
        logged[per_run] = [
            r.getMessage().split(" (")[0] for r in caplog.records if r.getMessage().startswith("step ")
        ]
    one, seven = results[1], results[7]
    assert checkpoint_files(seven.checkpoint) == checkpoint_files(one.checkpoint)
    assert seven.metrics["train_steps"] == one.metrics["train_steps"] == 45
    assert seven.metrics["train_examples_seen"] == 45 * 32
    assert seven.metrics["train_loss"] == one.metrics["train_loss"]
    assert [line.split()[1] for line in logged[7]] == ["10", "20", "30", "40", "45"]
    assert logged[7] == logged[1]
    reader = tf.train.load_checkpoint(seven.checkpoint)
    moving = [name for name in reader.get_variable_to_shape_map() if "moving_mean" in name]
    assert moving and np.abs(reader.get_tensor(moving[0])).sum() > 0  # the moving mean left its zeros


def test_epochs_end_inside_a_run(tmp_path, colors_data, monkeypatch):
    """An epoch's end inside a run of several steps stops the loop there: exact steps, no lost batch."""
    import include.train.training as training

    monkeypatch.setattr(training, "STEPS_PER_RUN", 5)
    config = colors_config(tmp_path, colors_data, training={"epochs": 2})
    result = train_model(config, AS_OF, tmp_path / "work")
    train_examples = result.data["train_examples"]
    assert result.metrics["train_examples_seen"] == 2 * train_examples
    assert result.metrics["train_steps"] == math.ceil(2 * train_examples / 32)
