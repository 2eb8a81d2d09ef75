"""Both example pipelines, as a client sees their exports: saved_model_cli and TF Serving's requests.

Each pipeline's own YAML is trained (on its example data, in a temporary root), validated and
exported through the same steps as a run; the export is then read by `saved_model_cli` and
answered through `ClassificationRequest`, `RegressionRequest` and `PredictRequest` protos built
with `tensorflow-serving-api`, fed the way TensorFlow Serving feeds them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from include.config import DEFAULT_PIPELINES_DIR, load_pipeline_config
from include.train.features import make_example
from tests.helpers import AFTER_ALL_DATA, write_pipeline

SAVED_MODEL_CLI = str(Path(sys.executable).with_name("saved_model_cli"))


def exported_example(name: str, root: Path) -> tuple:
    """Returns (config, export dir, validation verdict) of example pipeline `name` trained under `root`."""
    from include.savedmodel.export import export_savedmodel
    from include.train.training import train_model
    from include.validate.checkpoint import validate_checkpoint
    from tools.example_data import write_example_data

    raw = yaml.safe_load((DEFAULT_PIPELINES_DIR / f"{name}.yaml").read_text())
    raw["data"]["location"] = str(root / "data")
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    write_example_data(name, root / "data")
    config = load_pipeline_config(write_pipeline(root / "pipelines", raw))
    trained = train_model(config, AFTER_ALL_DATA, root / "work")
    verdict = validate_checkpoint(config, trained.checkpoint, trained.metrics)
    target = root / "export" / "1"
    export_savedmodel(config, trained.checkpoint, target)
    return config, target, verdict


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Returns the exported digits_softmax example (softmax classifier, classify + predict)."""
    return exported_example("digits_softmax", tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """Returns the exported diabetes_keras example (Keras regression, regress + predict)."""
    return exported_example("diabetes_keras", tmp_path_factory.mktemp("diabetes"))


def cli(*args: str) -> str:
    """Returns the stdout of `saved_model_cli` (which must succeed)."""
    done = subprocess.run([SAVED_MODEL_CLI, *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def answer(export_dir: Path, request, kind: str) -> dict:
    """Returns {output: array} for a TF Serving request, run the way the model server runs it.

    Classify and regress requests carry tf.Examples, which the server serializes into the
    signature's one string input; predict requests carry a TensorProto per input.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    key = request.model_spec.signature_name
    with v1.Session(graph=tf.Graph()) as sess:
        meta = v1.saved_model.loader.load(sess, [v1.saved_model.tag_constants.SERVING], str(export_dir))
        signature = meta.signature_def[key]
        if kind == "predict":
            feeds = {signature.inputs[n].name: tf.make_ndarray(p) for n, p in request.inputs.items()}
        else:
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            feeds = {signature.inputs["inputs"].name: np.array(examples, dtype=object)}
        return sess.run({n: info.name for n, info in signature.outputs.items()}, feed_dict=feeds)


def serving_examples(config, rows: list[dict]):
    """Returns a tensorflow_serving Input proto holding `rows` as tf.Examples."""
    import tensorflow as tf
    from tensorflow_serving.apis import input_pb2

    return input_pb2.Input(
        example_list=input_pb2.ExampleList(
            examples=[tf.train.Example.FromString(make_example(r)) for r in rows]
        )
    )


DIGIT_ROWS = [{"x": np.linspace(0, 1, 64).tolist()}, {"x": [0.5] * 64}]
PATIENTS = [
    {"age": 59.0, "sex": "M", "bmi": 32.1, "bp": 101.0, "s1": 157.0, "s2": 93.2, "s3": 38.0, "s4": 4.0,
     "s5": 4.8598, "s6": 87.0},
    {"age": 48.0, "sex": "F", "bmi": 21.6, "bp": 87.0, "s1": 183.0, "s2": 103.2, "s3": 70.0, "s4": 3.0,
     "s5": 3.8918},  # no s6: the YAML's default (91.26) fills it
]  # fmt: skip


def test_saved_model_cli_shows_the_declared_signatures_of_both_examples(digits, diabetes):
    """saved_model_cli reads both exports: their signature keys, methods and inputs are the YAML's."""
    digits_text = cli("show", "--dir", str(digits[1]), "--all")
    assert "signature_def['predict_images']" in digits_text
    assert "Method name is: tensorflow/serving/classify" in digits_text
    diabetes_text = cli("show", "--dir", str(diabetes[1]), "--all")
    assert "signature_def['predict_progression']" in diabetes_text
    assert "Method name is: tensorflow/serving/regress" in diabetes_text
    for feature in ("age", "sex", "s6"):
        assert f"inputs['{feature}']" in diabetes_text


def test_saved_model_cli_runs_the_regress_signature_on_examples(diabetes):
    """saved_model_cli run --input_examples feeds tf.Examples to serving_default; it answers a float each."""
    examples = "inputs=" + repr([{k: [v] for k, v in row.items()} for row in PATIENTS])
    out = cli(
        "run",
        "--dir",
        str(diabetes[1]),
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--input_examples",
        examples,
    )
    values = [
        float(v)
        for v in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", out.split("Result for output key outputs:")[1])
    ]
    assert len(values) == 2 and all(0 < v < 400 for v in values)


def test_classification_and_predict_requests_answer_like_the_trained_model(digits):
    """A ClassificationRequest gets ten classes per example; a PredictRequest the same scores."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2

    config, export_dir, _ = digits
    classify = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="digits", signature_name="serving_default"),
        input=serving_examples(config, DIGIT_ROWS),
    )
    classes = answer(export_dir, classify, "classify")
    assert classes["classes"].shape == (2, 10) and classes["scores"].shape == (2, 10)
    assert sorted(classes["classes"][0].tolist()) == sorted(str(i).encode() for i in range(10))
    predict = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="digits", signature_name="predict_images")
    )
    predict.inputs["images"].CopyFrom(
        tf.make_tensor_proto(np.array([r["x"] for r in DIGIT_ROWS], np.float32))
    )
    scores = answer(export_dir, predict, "predict")["scores"]
    np.testing.assert_allclose(np.sort(scores, axis=1)[:, ::-1], classes["scores"], rtol=1e-5)


def test_regression_and_predict_requests_answer_the_same_floats(diabetes):
    """A RegressionRequest and a PredictRequest of the raw features give the same prediction per patient."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, regression_pb2

    config, export_dir, verdict = diabetes
    regress = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(name="diabetes", signature_name="serving_default"),
        input=serving_examples(config, PATIENTS),
    )
    regressed = answer(export_dir, regress, "regress")["outputs"]
    assert regressed.shape == (2,) and np.isfinite(regressed).all()
    predict = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="diabetes", signature_name="predict_progression")
    )
    for name, spec in config.features.items():
        values = [row.get(name, spec.default) for row in PATIENTS]
        array = (
            np.array([v.encode() for v in values], dtype=object)
            if spec.dtype == "string"
            else np.array(values, np.float32)
        )
        predict.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    predicted = answer(export_dir, predict, "predict")["progression"]
    np.testing.assert_allclose(predicted, regressed, rtol=1e-5)
    assert verdict["signatures"]["serving_default"]["method"] == "tensorflow/serving/regress"
