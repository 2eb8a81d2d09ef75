"""End to end through Airflow (`airflow dags test`): the Keras regression example, and bad data.

The `diabetes_keras` pipeline as shipped (its YAML, its Keras builder), pointed at a temporary
copy of its data: a run publishes a regression model; then one partition gets a record with a
string where a float belongs, and the next run fails at once naming the file, record and feature,
with nothing published.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from include.config import DEFAULT_PIPELINES_DIR
from include.registry.store import read_manifest
from include.train.features import make_example
from tests.helpers import AirflowEnv, assert_complete, write_pipeline
from tools import local_airflow
from tools.example_data import write_example_data
from tools.local_airflow import free_port

pytestmark = pytest.mark.e2e

GOOD_DATE, GOOD_VERSION = "2026-10-25T00:00:00+00:00", "20261025000000"
BAD_DATE = "2026-10-28T00:00:00+00:00"


@pytest.fixture(scope="module")
def diabetes_env(tmp_path_factory) -> AirflowEnv:
    """Returns a migrated Airflow home whose pipelines dir holds the diabetes_keras example."""
    base = tmp_path_factory.mktemp("keras-airflow")
    home, pipelines, root = base / "home", base / "pipelines", base / "store"
    home.mkdir()
    raw = yaml.safe_load((DEFAULT_PIPELINES_DIR / "diabetes_keras.yaml").read_text())
    raw["data"]["location"] = str(root / "data")
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    write_example_data("diabetes_keras", root / "data")
    write_pipeline(pipelines, raw)
    env = local_airflow.airflow_env(home, free_port(), extra={"SAVEDMODEL_PIPELINES_DIR": str(pipelines)})
    airflow = AirflowEnv(home, pipelines, root, env)
    airflow.run("db", "migrate")
    return airflow


def tree_digest(root: Path) -> str:
    """Returns a SHA-256 over every file's relative path and bytes under `root`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_the_keras_regression_pipeline_publishes_a_version(diabetes_env):
    """A run trains the Keras model, exports regress + predict signatures and records regression metrics."""
    done = diabetes_env.run("dags", "test", "diabetes_keras", GOOD_DATE)
    assert "state=success" in done.stdout + done.stderr
    model = diabetes_env.root / "serving" / "diabetes"
    assert_complete(model / GOOD_VERSION)
    entry = read_manifest(model)["versions"][GOOD_VERSION]
    assert entry["signatures"]["serving_default"]["method"] == "tensorflow/serving/regress"
    assert set(entry["signatures"]["predict_progression"]["inputs"]) == {
        "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"
    }  # fmt: skip
    assert 0 < entry["metrics"]["eval_loss"] < 5000 and "eval_accuracy" not in entry["metrics"]
    assert entry["hyperparameters"]["epochs"] == 60
    assert entry["verification"]["signatures"] == 2


def test_bad_data_fails_at_once_naming_file_record_and_feature(diabetes_env):
    """A string in a float feature: train fails without retry, the message names it, nothing is published."""
    import tensorflow as tf

    diabetes_env.run("dags", "test", "diabetes_keras", GOOD_DATE)  # idempotent if the test above ran
    partition = diabetes_env.root / "data" / "dt=2026-10-20" / "part-00000.tfrecord"
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(partition))]
    records[2] = make_example(
        {"age": "fifty", "sex": "F", "bmi": 20.0, "bp": 80.0, "target": 100.0, "id": 9999}
    )
    with tf.io.TFRecordWriter(str(partition)) as writer:
        for record in records:
            writer.write(record)
    serving = diabetes_env.root / "serving"
    before = tree_digest(serving)

    done = diabetes_env.run("dags", "test", "diabetes_keras", BAD_DATE, check=False)

    output = done.stdout + done.stderr
    assert f"bad training data in {partition}, record 2: feature 'age' holds bytes_list" in output
    assert "AirflowFailException" in output  # permanent: no retry
    assert output.count("bad training data in") >= 1 and "up_for_retry" not in output
    assert tree_digest(serving) == before
