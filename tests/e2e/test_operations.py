"""Real Airflow operations: scheduled runs, REST-triggered runs, backfills, the deferrable sensor.

One local Airflow (api-server, scheduler, dag-processor, triggerer; SQLite + LocalExecutor) runs
for the whole module in a temporary home on free ports, and is always torn down. Each test has
its own pipeline and model; the two backfill tests share the `backfilled` fixture, which makes
the state they start from, so any one test can run alone (`pytest -k NAME`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from include.registry.store import read_manifest
from include.savedmodel.files import content_digest
from include.versions import run_work_dir
from plugins.savedmodel_tasks import PRELOADED
from tests.e2e.airflow_api import AirflowApi, ApiError
from tests.helpers import assert_complete, make_raw, running_airflow, write_pipeline
from tools.local_airflow import EXECUTOR, LocalAirflow

pytestmark = pytest.mark.e2e

PIPELINES = {
    # name: (model name, schedule, operations overrides)
    "ops_scheduled": ("scheduled_digits", "@daily", {}),
    "ops_manual": ("manual_digits", None, {}),
    "ops_backfill": ("backfill_digits", "@daily", {}),
    "ops_deferrable": ("deferrable_digits", None, {"sensor_mode": "deferrable"}),
}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, example_data, store):
    """Yields a healthy local Airflow whose pipelines dir holds this module's pipelines."""
    pipelines = tmp_path_factory.mktemp("pipelines")
    for name, (model, schedule, operations) in PIPELINES.items():
        raw = make_raw(store, example_data, name=name, schedule=schedule)
        raw["model"]["name"] = model
        raw["training"]["steps"] = 500
        raw["operations"] = {**raw.get("operations", {}), "sensor_timeout_minutes": 10, **operations}
        write_pipeline(pipelines, raw)
    with running_airflow(tmp_path_factory.mktemp("airflow-home"), pipelines) as local:
        yield local


@pytest.fixture(scope="module")
def api(airflow) -> AirflowApi:
    client = AirflowApi(airflow.url)
    for name, (_, schedule, _) in PIPELINES.items():
        client.wait_for_dag(name)
        if schedule is None:  # runs of a paused DAG stay queued, even manual ones
            client.unpause(name)
    return client


def model_dir(store: Path, dag_id: str) -> Path:
    return store / "serving" / PIPELINES[dag_id][0]


def versions(store: Path, dag_id: str) -> dict[str, dict]:
    return read_manifest(model_dir(store, dag_id))["versions"]


def assert_run_succeeded(api: AirflowApi, dag_id: str, run: dict) -> None:
    assert run["state"] == "success", api.failure_report(dag_id, run["dag_run_id"])


def backfill(airflow: LocalAirflow, first: str, last: str, *options: str) -> None:
    """Runs `airflow backfill create` for ops_backfill over [first, last] (fails the test if it fails)."""
    dates = ["--from-date", first, "--to-date", last]
    airflow.cli("backfill", "create", "--dag-id", "ops_backfill", *dates, *options)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Returns every file under root with its size and mtime."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_scheduled_run_publishes(airflow, api, store):
    """Unpausing a scheduled pipeline makes the scheduler run it; the run publishes its version.

    Its TensorFlow tasks inherit TensorFlow from TensorFlowLocalExecutor's worker processes, and
    publish checks the export in another process than the one that wrote it.
    """
    api.unpause("ops_scheduled")
    run = api.wait_for_scheduled_run("ops_scheduled")
    assert_run_succeeded(api, "ops_scheduled", run)
    assert run["run_type"] == "scheduled"
    logical = dt.datetime.fromisoformat(run["logical_date"].replace("Z", "+00:00"))
    version = logical.strftime("%Y%m%d%H%M%S")
    entry = versions(store, "ops_scheduled")[version]
    assert entry["run_type"] == "scheduled" and entry["run_id"] == run["dag_run_id"]
    assert_complete(model_dir(store, "ops_scheduled") / version)
    work_dir = run_work_dir(store / "exports", PIPELINES["ops_scheduled"][0], run["dag_run_id"])
    exported_by = json.loads((work_dir / "export.json").read_text())["pid"]
    assert entry["verification"]["pid"] != exported_by, "the export was checked by the process that wrote it"
    assert airflow.env["AIRFLOW__CORE__EXECUTOR"] == EXECUTOR
    run_logs = airflow.home / "logs" / "dag_id=ops_scheduled" / f"run_id={run['dag_run_id']}"
    for task in ("train", "validate_signatures"):
        (task_log,) = (run_logs / f"task_id={task}").glob("*.log")
        assert PRELOADED in task_log.read_text(), task_log


def test_rest_trigger_with_overrides(api, store):
    """POST /dagRuns with conf: the overrides reach training and the lineage; consumers hear of it."""
    api.unpause("savedmodel_asset_consumer")
    run_id = api.trigger("ops_manual", {"steps": 300, "learning_rate": 0.2, "version": 42})
    run = api.wait_for_run("ops_manual", run_id)
    assert_run_succeeded(api, "ops_manual", run)
    entry = versions(store, "ops_manual")["42"]
    assert entry["run_type"] == "manual" and entry["run_id"] == run_id
    assert entry["hyperparameters"]["steps"] == 300 and entry["hyperparameters"]["learning_rate"] == 0.2
    assert entry["params"]["version"] == 42
    assert_complete(model_dir(store, "ops_manual") / "42")

    # The publish's Asset event scheduled the example consumer DAG, with the version in its extra.
    deadline = time.monotonic() + 120
    announced: list = []
    while time.monotonic() < deadline and not any(a.get("version") == 42 for a in announced):
        for run in api.runs("savedmodel_asset_consumer"):
            if run["state"] == "success":
                announced += api.get(
                    f"/api/v2/dags/savedmodel_asset_consumer/dagRuns/{run['dag_run_id']}"
                    "/taskInstances/report_new_versions/xcomEntries/return_value"
                )["value"]
        time.sleep(2)
    (event,) = [a for a in announced if a.get("version") == 42]
    assert event["asset"] == "savedmodel/manual_digits" and event["path"].endswith("/manual_digits/42")


HOSTILE_CONF = {
    "negative steps": {"steps": -5},
    "zero steps": {"steps": 0},
    "overflowing steps": {"steps": 10**30},
    "steps as string": {"steps": "100"},
    "traversal version": {"version": "../x"},
    "absolute path version": {"version": "/etc/passwd"},
    "NUL byte version": {"version": "1\u0000"},
    "zero version": {"version": 0},
    "negative version": {"version": -1},
    "overflowing version": {"version": 2**63},
    "float version": {"version": 1.5},
    "learning rate as string": {"learning_rate": "fast"},
    "zero learning rate": {"learning_rate": 0},
    "force flag as string": {"force_publish": "yes"},
    "overlong reason": {"force_reason": "x" * 1000},
    "reason as list": {"force_reason": ["a"]},
}


@pytest.mark.parametrize("conf", list(HOSTILE_CONF.values()), ids=list(HOSTILE_CONF))
def test_invalid_conf_is_rejected_at_trigger_time(api, store, conf):
    """Bad conf gets HTTP 400 naming the param; no run is created and nothing on disk changes."""
    before_files, before_runs = snapshot(store), len(api.runs("ops_manual"))
    with pytest.raises(ApiError) as info:
        api.trigger("ops_manual", conf)
    assert info.value.status == 400
    assert next(iter(conf)) in info.value.body
    assert len(api.runs("ops_manual")) == before_runs
    assert snapshot(store) == before_files


BACKFILLED = ["20261010000000", "20261011000000", "20261012000000"]


@dataclass(frozen=True)
class Backfilled:
    """What the `backfilled` fixture saw: the newest version before the backfill, and every run after."""

    newest: str
    newest_digest: str
    runs: list[dict]


@pytest.fixture(scope="module")
def backfilled(airflow, api, store) -> Backfilled:
    """Unpauses ops_backfill, lets its scheduled run publish, then backfills 2026-10-10..12 and waits."""
    api.unpause("ops_backfill")
    scheduled = api.wait_for_scheduled_run("ops_backfill")
    assert_run_succeeded(api, "ops_backfill", scheduled)
    newest = max(versions(store, "ops_backfill"), key=int)
    newest_digest = content_digest(model_dir(store, "ops_backfill") / newest)
    backfill(airflow, "2026-10-10", "2026-10-12")
    runs = api.wait_for_runs("ops_backfill", 4)
    api.wait_for_backfills("ops_backfill")
    return Backfilled(newest, newest_digest, runs)


def test_backfill_publishes_one_version_per_date(api, store, backfilled):
    """A 3-date backfill trains each date on its own data and leaves the newest version newest."""
    newest, newest_digest = backfilled.newest, backfilled.newest_digest
    backfills = [r for r in backfilled.runs if r["run_type"] == "backfill"]
    assert len(backfills) == 3 and all(r["state"] == "success" for r in backfills)

    entries = versions(store, "ops_backfill")
    assert set(BACKFILLED) <= set(entries)
    assert [entries[v]["data"]["last_partition"] for v in BACKFILLED] == [
        "dt=2026-10-09",
        "dt=2026-10-10",
        "dt=2026-10-11",
    ]
    assert len({entries[v]["data"]["fingerprint"] for v in BACKFILLED}) == 3
    assert all(entries[v]["run_type"] == "backfill" for v in BACKFILLED)
    # Still newest, unless midnight UTC passed and @daily published a newer scheduled version.
    latest = max(entries, key=int)
    assert latest == newest or (int(latest) > int(newest) and entries[latest]["run_type"] == "scheduled")
    assert content_digest(model_dir(store, "ops_backfill") / newest) == newest_digest

    # The training pool (1 slot) kept train tasks from overlapping.
    trains = sorted(
        (api.task_instance("ops_backfill", r["dag_run_id"], "train") for r in backfills),
        key=lambda ti: ti["start_date"],
    )
    assert all(ti["pool"] == "training" for ti in trains)
    for earlier, later in itertools.pairwise(trains):
        assert earlier["end_date"] <= later["start_date"]


def test_backfill_reprocess_is_idempotent_and_takes_conf(airflow, api, store, backfilled):
    """Reprocessing completed dates republishes identical bytes; --dag-run-conf reaches new runs."""
    before = {v: versions(store, "ops_backfill")[v]["content_digest"] for v in BACKFILLED}
    backfill_runs = {r["dag_run_id"] for r in api.runs("ops_backfill") if r["run_type"] == "backfill"}
    api.wait_for_backfills("ops_backfill")
    backfill(airflow, "2026-10-10", "2026-10-12", "--reprocess-behavior", "completed")
    time.sleep(5)  # the cleared runs go back to queued
    runs = api.wait_for_runs("ops_backfill", len(backfill_runs))
    api.wait_for_backfills("ops_backfill")
    # The completed dates were cleared and rerun: no new backfill run, every run succeeded.
    assert {r["dag_run_id"] for r in runs if r["run_type"] == "backfill"} == backfill_runs
    assert all(r["state"] == "success" for r in runs)
    after = versions(store, "ops_backfill")
    assert {v: after[v]["content_digest"] for v in BACKFILLED} == before
    assert all(after[v]["last_publish"] == "unchanged" for v in BACKFILLED)  # rerun, republished as no-op

    backfill(airflow, "2026-10-15", "2026-10-15", "--dag-run-conf", '{"steps": 250}')
    api.wait_for_runs("ops_backfill", len(runs) + 1)
    entry = versions(store, "ops_backfill")["20261015000000"]
    assert entry["hyperparameters"]["steps"] == 250 and entry["run_type"] == "backfill"


def test_deferrable_sensor_waits_in_the_triggerer(airflow, api, store):
    """With sensor_mode deferrable, an incomplete version defers to the triggerer until complete."""
    run_id = api.trigger("ops_deferrable", {"version": 7})
    assert_run_succeeded(api, "ops_deferrable", api.wait_for_run("ops_deferrable", run_id))
    export = Path(
        api.task_instance("ops_deferrable", run_id, "wait_for_version")["rendered_fields"]["version_dir"]
    )
    shard = next((export / "variables").glob("variables.data-*"))
    hidden = shard.with_name("hidden-shard")
    shard.rename(hidden)
    try:
        api.post(
            "/api/v2/dags/ops_deferrable/clearTaskInstances",
            {
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": ["wait_for_version"],
                "only_failed": False,
                "include_downstream": False,
                "reset_dag_runs": True,
            },
        )
        # Deferred, and the trigger (in the triggerer) has seen the incomplete version at least
        # once; only then is the shard put back.
        deadline = time.monotonic() + 180
        state, text = None, ""
        while time.monotonic() < deadline and not (state == "deferred" and "not complete yet" in text):
            state = api.task_instance("ops_deferrable", run_id, "wait_for_version")["state"]
            text = trigger_log_text(airflow)
            time.sleep(1)
        assert state == "deferred" and "not complete yet" in text, (state, text[-2000:])
    finally:
        hidden.rename(shard)
    assert_run_succeeded(api, "ops_deferrable", api.wait_for_run("ops_deferrable", run_id))
    ti = api.task_instance("ops_deferrable", run_id, "wait_for_version")
    assert ti["state"] == "success" and ti["try_number"] >= 2
    assert "Trigger fired event" in trigger_log_text(airflow)


def trigger_log_text(airflow: LocalAirflow) -> str:
    """The trigger's own log lines, written by the triggerer beside the task's attempt logs."""
    trigger_logs = (airflow.home / "logs" / "dag_id=ops_deferrable").rglob("*.trigger.*.log")
    return "\n".join(p.read_text() for p in trigger_logs)
