"""End to end through Airflow (`airflow dags test`): the run's lineage reaches OpenLineage.

The OpenLineage provider, configured with its file transport through the environment only, writes
every event of one real run of the example pipeline to a file: each task's START and COMPLETE,
train's inputs (one dataset per data partition, with its own fingerprint, the window's and the
partition's examples), and publish_version's output (the published version dir). Every event validates
against OpenLineage's JSON Schema (tests/openlineage_spec/, vendored: no installed package ships
it), every facet against the schema its `_schemaURL` names: OpenLineage's, or ours
(include/lineage/facets.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from include.config import PROJECT_ROOT
from include.lineage import FACETS_FILE
from include.registry.store import read_manifest
from include.versions import run_work_dir

pytestmark = pytest.mark.e2e

LOGICAL_DATE = "2026-10-12T00:00:00+00:00"
VERSION = 20261012000000
TASKS = ["train", "validate_signatures", "export_savedmodel", "wait_for_version", "publish_version"]
SPEC_DIR = Path(__file__).resolve().parents[1] / "openlineage_spec"
CORE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
#: One run's events, kept for the runbook's excerpt.
ARTIFACT = PROJECT_ROOT / "test-artifacts" / "openlineage-events.jsonl"


@pytest.fixture(scope="module")
def events_file(airflow_env) -> Path:
    """Runs the example DAG once for 2026-10-12 with OpenLineage's file transport on; returns the file."""
    path = airflow_env.home / "openlineage.jsonl"
    airflow_env.env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(path), "append": True}
    )
    airflow_env.env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "savedmodel-e2e"
    airflow_env.run("dags", "test", "digits_softmax", LOGICAL_DATE)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(path.read_bytes())
    return path


@pytest.fixture(scope="module")
def events(events_file) -> list[dict]:
    """Returns the events the run wrote, one JSON document a line."""
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def task_events(events: list[dict], task_id: str) -> dict[str, dict]:
    """Returns a task's events by type (START, COMPLETE, ...) of the pipeline's DAG."""
    return {e["eventType"]: e for e in events if e["job"]["name"] == f"digits_softmax.{task_id}"}


def schema_registry() -> Registry:
    """Returns OpenLineage's spec and the facet schemas the events name (its and ours), by $id.

    The Airflow provider's facets name OpenLineage's RunFacet as their schema.
    """
    files = [SPEC_DIR / "OpenLineage.json", *SPEC_DIR.glob("facets/*.json"), FACETS_FILE]
    resources = []
    for file in files:
        schema = json.loads(file.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def facets_of(event: dict) -> list[dict]:
    """Returns every facet an event carries: the run's, the job's and its datasets'."""
    found = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        for key in ("facets", "inputFacets", "outputFacets"):
            found += dataset.get(key, {}).values()
    return found


def test_every_task_reports_start_and_complete(events):
    """Each of the five tasks has one START and one COMPLETE event, both in the pipeline's run."""
    for task_id in TASKS:
        by_type = task_events(events, task_id)
        assert set(by_type) == {"START", "COMPLETE"}, (task_id, sorted(by_type))
        parent = by_type["COMPLETE"]["run"]["facets"]["parent"]
        assert parent["job"]["name"] == "digits_softmax"
    assert {e["job"]["namespace"] for e in events} == {"savedmodel-e2e"}


def test_train_reads_the_runs_partitions_with_their_fingerprint(airflow_env, events):
    """train's inputs are the partitions the run read (as its manifest entry lists them), one dataset
    each, named by path, with the window's fingerprint and the partition's examples."""
    data = read_manifest(airflow_env.root / "serving" / "digits")["versions"][str(VERSION)]["data"]
    complete = task_events(events, "train")["COMPLETE"]
    inputs = complete["inputs"]
    assert [Path(i["name"]).name for i in inputs] == data["partitions"]
    assert {i["namespace"] for i in inputs} == {"file"}
    facets = [i["inputFacets"]["savedmodel_partition"] for i in inputs]
    assert {f["windowFingerprint"] for f in facets} == {data["fingerprint"]}
    own = data["partition_fingerprints"]
    assert [f["fingerprint"] for f in facets] == [own[partition] for partition in data["partitions"]]
    assert len({f["fingerprint"] for f in facets}) == len(facets)  # each partition's own
    assert [f["partition"] for f in facets] == data["partitions"]
    assert sum(f["examples"] for f in facets) == data["records"]
    assert [i["inputFacets"]["inputStatistics"]["rowCount"] for i in inputs] == [
        f["examples"] for f in facets
    ]
    (checkpoint,) = complete["outputs"]
    work_dir = run_work_dir(airflow_env.root / "exports", "digits", complete_run_id(events))
    assert (checkpoint["namespace"], checkpoint["name"]) == ("file", str(work_dir / "checkpoint"))


def complete_run_id(events: list[dict]) -> str:
    """Returns the Airflow run id of the pipeline's run, as the events carry it."""
    return task_events(events, "train")["COMPLETE"]["run"]["facets"]["airflow"]["dagRun"]["run_id"]


def test_publish_outputs_the_published_version(airflow_env, events):
    """publish_version's input is the checked export and its output the version dir it published,
    with the version number, labels and held-out metrics."""
    complete = task_events(events, "publish_version")["COMPLETE"]
    entry = read_manifest(airflow_env.root / "serving" / "digits")["versions"][str(VERSION)]
    (version,) = complete["outputs"]
    assert version["namespace"] == "file"
    assert version["name"] == str(airflow_env.root / "serving" / "digits" / str(VERSION))
    assert version["facets"]["version"]["datasetVersion"] == str(VERSION)
    facet = version["facets"]["savedmodel_version"]
    assert facet["version"] == VERSION and facet["status"] == "published"
    assert facet["contentDigest"] == entry["content_digest"]
    assert set(facet["labels"]) == {"canary", "stable"}
    assert facet["metrics"]["eval_accuracy"] == entry["metrics"]["eval_accuracy"]
    (export,) = complete["inputs"]
    (exported,) = task_events(events, "export_savedmodel")["COMPLETE"]["outputs"]
    assert (export["namespace"], export["name"]) == (exported["namespace"], exported["name"])
    work_dir = run_work_dir(airflow_env.root / "exports", "digits", complete_run_id(events))
    assert export["name"] == str(work_dir / "export" / str(VERSION))


def test_every_event_and_facet_validates_against_its_schema(events):
    """Every event is valid against OpenLineage's 2-0-2 schema, and every facet against the schema
    its _schemaURL names."""
    registry = schema_registry()
    core = Draft202012Validator({"$ref": f"{CORE_SCHEMA}#/$defs/RunEvent"}, registry=registry)
    assert events
    assert list(core.iter_errors({**events[0], "eventType": "DONE"}))  # the schema does check
    for event in events:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in core.iter_errors(event)]
        assert not errors, (event["eventType"], event["job"]["name"], errors)
        for facet in facets_of(event):
            validator = Draft202012Validator({"$ref": facet["_schemaURL"]}, registry=registry)
            errors = [e.message for e in validator.iter_errors(facet)]
            assert not errors, (event["job"]["name"], facet["_schemaURL"], errors)
