"""End to end through Airflow (`airflow dags test`): a run publishes a servable version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from include.data import serialize_examples
from include.publish import read_manifest
from include.versions import run_work_dir
from tests.conftest import example_raw, write_pipeline
from tests.helpers import assert_complete, checkpoint_scores, score_in_fresh_process

pytestmark = pytest.mark.e2e

LOGICAL_DATE = "2026-10-12T00:00:00+00:00"
VERSION = "20261012000000"


@pytest.fixture(scope="module")
def first_run(airflow_env):
    """Runs the example DAG once for 2026-10-12 and returns the CLI result."""
    return airflow_env.run("dags", "test", "digits_softmax", LOGICAL_DATE)


def json_output(done) -> list:
    """Returns the JSON list an `airflow ... -o json` command printed on stdout."""
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("[")))


def model_dir(airflow_env) -> Path:
    return airflow_env.root / "serving" / "digits"


def test_run_publishes_a_complete_version(airflow_env, first_run):
    """The DAG run publishes version YYYYMMDDHHMMSS of its logical date, complete."""
    assert "state=success" in first_run.stdout + first_run.stderr
    assert_complete(model_dir(airflow_env) / VERSION)
    assert [p.name for p in model_dir(airflow_env).iterdir() if p.name.isdigit()] == [VERSION]


def test_manifest_records_the_run(airflow_env, first_run):
    """The manifest entry names the run, its data as of its date and its metrics."""
    entry = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    assert entry["dag_id"] == "digits_softmax" and entry["logical_date"] == LOGICAL_DATE
    assert entry["data"]["last_partition"] == "dt=2026-10-11"
    assert entry["metrics"]["eval_accuracy"] >= 0.9
    assert len(entry["signature_fingerprint"]) == 64


def test_published_model_scores_like_the_trained_one(airflow_env, first_run, tmp_path, session_config):
    """A fresh process classifies tf.Examples with the run's checkpoint scores (1e-5)."""
    entry = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    work = run_work_dir(airflow_env.root / "exports", "digits", entry["run_id"])
    sample = np.load(work / "checkpoint" / "eval_sample.npz")
    expected = checkpoint_scores(session_config, str(work / "checkpoint" / "model.ckpt"), sample["x"])
    served = score_in_fresh_process(
        model_dir(airflow_env) / VERSION, serialize_examples(sample["x"]), tmp_path
    )
    np.testing.assert_allclose(served["scores"], expected, atol=1e-5)
    accuracy = (np.array([int(row[0]) for row in served["classes"]]) == sample["y"]).mean()
    assert accuracy >= 0.8


def test_rerun_of_the_same_date_is_idempotent(airflow_env, first_run):
    """Running the same date again republishes identical bytes: a no-op success."""
    before = read_manifest(model_dir(airflow_env))["versions"][VERSION]["content_digest"]
    airflow_env.run("dags", "test", "digits_softmax", LOGICAL_DATE)
    after = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    assert after["content_digest"] == before and after["last_publish"] == "unchanged"


def test_conf_overrides_reach_the_run(airflow_env, first_run):
    """Trigger conf (steps, explicit version) is validated and used by the run."""
    conf = json.dumps({"steps": 300, "version": 7})
    airflow_env.run("dags", "test", "digits_softmax", "2026-10-20T00:00:00+00:00", "-c", conf)
    entry = read_manifest(model_dir(airflow_env))["versions"]["7"]
    assert entry["hyperparameters"]["steps"] == 300 and entry["params"]["version"] == 7
    assert_complete(model_dir(airflow_env) / "7")


def test_broken_yaml_is_listed_as_an_import_error(airflow_env, first_run):
    """`airflow dags list-import-errors` names the broken file and key; the good DAG stays."""
    bad = example_raw()
    bad.update(name="broken_pipeline", retries="often")
    write_pipeline(airflow_env.pipelines, bad, "broken.yaml")
    try:
        airflow_env.run("dags", "reserialize", check=False)
        # list-import-errors exits 1 when there are errors, by design.
        errors = json_output(airflow_env.run("dags", "list-import-errors", "-o", "json", check=False))
        dags = json_output(airflow_env.run("dags", "list", "-o", "json"))
    finally:
        (airflow_env.pipelines / "broken.yaml").unlink()
    (error,) = errors
    assert error["filepath"] == "pipeline_config_errors.py"
    assert (
        "broken.yaml" in error["error"] and "retries: expected an integer, got str 'often'" in error["error"]
    )
    assert [d["dag_id"] for d in dags] == ["digits_softmax"]
