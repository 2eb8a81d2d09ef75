"""DAG integrity: the factory's DAGs load cleanly, cheaply, and a broken YAML stays isolated."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from include.config import PROJECT_ROOT, load_pipeline_config
from tests.helpers import EXAMPLE_YAML, example_raw, write_pipeline

DAGS_FOLDER = PROJECT_ROOT / "dags"
SUPPORT_DAGS = ["savedmodel_asset_consumer", "savedmodel_promote"]
TASK_ORDER = ["train", "validate_signatures", "export_savedmodel", "wait_for_version", "publish_version"]


def load_dagbag(monkeypatch, pipelines_dir: Path | None = None) -> DagBag:
    """Returns a DagBag of the project's dags folder, reading pipelines from `pipelines_dir`."""
    if pipelines_dir is not None:
        monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(pipelines_dir))
    return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture
def dagbag(monkeypatch) -> DagBag:
    monkeypatch.delenv("SAVEDMODEL_PIPELINES_DIR", raising=False)
    return load_dagbag(monkeypatch)


def test_no_import_errors(dagbag):
    """The shipped pipelines (digits_softmax, diabetes_keras) parse without import errors."""
    assert dagbag.import_errors == {}
    assert {"digits_softmax", "diabetes_keras"} <= set(dagbag.dag_ids)


def test_dags_have_tags_owner_retries_and_docs(dagbag):
    """Every DAG carries tags, an owner, retries and the module docs (Astronomer's checks)."""
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and "SavedModel" in dag.doc_md
        for task in dag.tasks:
            assert task.retries >= 1, (dag_id, task.task_id)
            assert task.owner == "ml-platform"


def test_tasks_run_in_the_documented_order(dagbag):
    """train -> validate_signatures -> export_savedmodel -> wait_for_version -> publish_version."""
    dag = dagbag.dags["digits_softmax"]
    assert [t.task_id for t in dag.topological_sort()] == TASK_ORDER
    for upstream, downstream in itertools.pairwise(TASK_ORDER):
        assert downstream in dag.get_task(upstream).downstream_task_ids


def test_train_goes_to_the_training_queue(monkeypatch, tmp_path):
    """`operations.training_queue` routes only the train task; unset, train stays on the default queue."""
    default_queue = conf.get("operators", "default_queue")
    write_pipeline(tmp_path, example_raw())
    raw = example_raw()
    raw["name"], raw["operations"]["training_queue"] = "no_queue", None
    raw["model"]["name"] = "digits_no_queue"  # a model dir of its own: one per pipeline
    write_pipeline(tmp_path, raw)
    dags = load_dagbag(monkeypatch, tmp_path).dags
    queues = {task.task_id: task.queue for task in dags["digits_softmax"].tasks}
    assert queues == {task: ("training" if task == "train" else default_queue) for task in TASK_ORDER}
    assert {task.queue for task in dags["no_queue"].tasks} == {default_queue}


def test_publish_declares_the_model_asset(dagbag):
    """publish_version emits an Asset event for the model, for downstream DAGs."""
    outlets = dagbag.dags["digits_softmax"].get_task("publish_version").outlets
    assert [asset.name for asset in outlets] == ["savedmodel/digits"]


def test_trigger_params_are_declared(dagbag):
    """The trigger form offers the overrides, the version and the force / breaking-change switches."""
    params = dagbag.dags["digits_softmax"].params
    assert set(params) == {
        "steps",
        "learning_rate",
        "version",
        "force_publish",
        "force_reason",
        "allow_breaking_change",
    }
    assert params["force_publish"] is False and params["version"] is None


def test_the_steps_override_says_what_it_replaces(dagbag):
    """The steps field overrides training.steps, or (an epochs pipeline) trains that many steps instead."""
    digits = dagbag.dags["digits_softmax"].params.get_param("steps").description
    diabetes = dagbag.dags["diabetes_keras"].params.get_param("steps").description
    assert digits.startswith("Overrides training.steps (2000).")
    assert diabetes.startswith("Trains this many steps instead of training.epochs (60).")


@pytest.mark.parametrize(
    "conf",
    [
        {"steps": -5},
        {"steps": "many"},
        {"learning_rate": 0},
        {"learning_rate": 100},
        {"version": 0},
        {"version": "../x"},
        {"version": 2**63},
        {"force_publish": "yes"},
        {"force_reason": "x" * 501},
    ],
)
def test_trigger_form_rejects_bad_params(dagbag, conf):
    """Bad trigger params fail JSON-schema validation before a run is created."""
    params = ParamsDict(dagbag.dags["digits_softmax"].params)
    with pytest.raises(ParamValidationError):
        params.update(conf)
        params.validate()


def test_trigger_form_accepts_good_params(dagbag):
    """Valid overrides pass validation."""
    params = ParamsDict(dagbag.dags["digits_softmax"].params)
    params.update(
        {
            "steps": 100,
            "learning_rate": 0.1,
            "version": 20261012000000,
            "force_publish": True,
            "force_reason": "rebuild",
        }
    )
    assert params.validate()["version"] == 20261012000000


def test_promote_dag_params(dagbag):
    """The promote/rollback DAG asks for pipeline (enum), version, label (enum) and a reason."""
    params = dagbag.dags["savedmodel_promote"].params
    assert set(params) == {"pipeline", "version", "label", "reason"}
    schema = {key: params.get_param(key).schema for key in params}
    assert schema["pipeline"]["enum"] == ["diabetes_keras", "digits_softmax"]
    assert schema["label"]["enum"] == ["stable", "canary"]
    assert schema["reason"]["minLength"] == 1


def test_asset_consumer_is_scheduled_on_every_model_asset(dagbag):
    """The example consumer DAG runs on events of any pipeline's model asset."""
    dag = dagbag.dags["savedmodel_asset_consumer"]
    assert "savedmodel/digits" in str(dag.timetable.asset_condition)


def test_parsing_imports_no_tensorflow():
    """Parsing the dags folder in a fresh interpreter leaves tensorflow out of sys.modules."""
    script = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})\n"
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': len(bag.import_errors),\n"
        "  'tf': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'sklearn'))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SAVEDMODEL_PIPELINES_DIR"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dags"] and result["errors"] == 0
    assert result["tf"] == []


def test_broken_yaml_is_one_import_error_and_others_still_load(monkeypatch, tmp_path):
    """A broken YAML is reported with file, key and expectation; the valid pipeline still loads."""
    write_pipeline(tmp_path, example_raw(), "good.yaml")
    bad = example_raw()
    bad["name"] = "broken_pipeline"
    bad["training"]["steps"] = "lots"
    write_pipeline(tmp_path, bad, "broken.yaml")
    dagbag = load_dagbag(monkeypatch, tmp_path)
    assert sorted(dagbag.dag_ids) == ["digits_softmax", *SUPPORT_DAGS]
    ((path, message),) = dagbag.import_errors.items()
    assert path.endswith("pipeline_config_errors.py")
    assert str(tmp_path / "broken.yaml") in message
    assert "training.steps: expected an integer, got str 'lots'" in message


def test_new_yaml_gives_a_new_dag(monkeypatch, tmp_path):
    """Dropping another valid YAML in the folder adds a DAG, no code change."""
    write_pipeline(tmp_path, example_raw(), "a.yaml")
    second = example_raw()
    second["name"] = "digits_mlp"
    second["model"].update(name="digits_mlp", builder="mlp", hidden_units=[32])
    write_pipeline(tmp_path, second, "b.yaml")
    assert sorted(load_dagbag(monkeypatch, tmp_path).dag_ids) == [
        "digits_mlp",
        "digits_softmax",
        *SUPPORT_DAGS,
    ]


def test_a_renamed_copy_is_an_import_error_and_the_original_keeps_its_dag(monkeypatch, tmp_path):
    """A renamed copy of digits_softmax.yaml is an import error naming both files; the original DAG loads."""
    original = Path(shutil.copy2(EXAMPLE_YAML, tmp_path / EXAMPLE_YAML.name))
    copy = tmp_path / "digits_softmax_copy.yaml"
    copy.write_text(
        EXAMPLE_YAML.read_text().replace("\nname: digits_softmax\n", "\nname: digits_softmax_copy\n")
    )
    assert load_pipeline_config(copy).name == "digits_softmax_copy"
    dagbag = load_dagbag(monkeypatch, tmp_path)
    assert sorted(dagbag.dag_ids) == ["digits_softmax", *SUPPORT_DAGS]
    assert dagbag.dags["digits_softmax"].fileloc.endswith("savedmodel_pipelines.py")
    ((path, message),) = dagbag.import_errors.items()
    assert path.endswith("pipeline_config_errors.py")
    assert f"{copy.resolve()}:" in message and f"({original.resolve()})" in message
