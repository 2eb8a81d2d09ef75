"""The distributed setup, natively: CeleryExecutor on PostgreSQL + Redis with two workers.

docker-compose.yml cannot run here (no Docker engine), so this test runs the same stack as
plain processes: PostgreSQL and Redis from Debian's packages on loopback, and Airflow configured
from `airflow.env`, the settings file the compose file loads; only addresses differ (and the
test's shorter polling intervals). Two Celery workers, each under its own hostname like two
containers: `worker-default` consumes the default queue, `worker-training` the training queue.
A 4-date backfill (plus the scheduled run that unpausing creates) must run every task on a
worker, send train tasks to the training queue and publish consistent versions; then
everything must be stopped, with no process left behind.
"""

from __future__ import annotations

import collections
import secrets
import time

import pytest

from include.config import load_pipeline_config
from include.registry.store import read_manifest
from include.savedmodel.files import content_digest
from plugins.savedmodel_tasks import NOT_PRELOADED, PRELOADED
from tests.e2e.airflow_api import AirflowApi
from tests.e2e.native_services import (
    has_tensorflow_loaded,
    postgres_server,
    processes_with_env,
    redis_server,
)
from tests.helpers import assert_complete, make_raw, write_pipeline
from tools.local_airflow import SETTINGS_FILE, CeleryWorker, LocalAirflow, free_port, read_env_file

pytestmark = pytest.mark.e2e

DAG_ID = "celery_digits"
DATES = ["2026-10-10", "2026-10-11", "2026-10-12", "2026-10-13"]
SETTINGS = read_env_file(SETTINGS_FILE)
DEFAULT_QUEUE = SETTINGS["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, example_data, store):
    """The example pipeline (its training_queue included), as DAG `celery_digits`."""
    pipelines = tmp_path_factory.mktemp("pipelines")
    raw = make_raw(store, example_data, name=DAG_ID, schedule="@daily")
    raw["model"]["name"] = DAG_ID
    raw["training"]["steps"] = 500
    return load_pipeline_config(write_pipeline(pipelines, raw))


@pytest.fixture(scope="module")
def celery(tmp_path_factory, pipeline):
    """Yields a healthy distributed Airflow; on exit asserts nothing it started is left running."""
    home = tmp_path_factory.mktemp("celery-home")
    workers = (
        CeleryWorker("worker-default", (DEFAULT_QUEUE,)),
        CeleryWorker("worker-training", (pipeline.operations.training_queue,), concurrency=1),
    )
    started = time.monotonic()
    with postgres_server(secrets.token_hex(12)) as db, redis_server() as broker:
        settings = {
            **SETTINGS,
            # What docker-compose.yml sets per deployment: addresses (secrets are generated).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "SAVEDMODEL_PIPELINES_DIR": str(pipeline.source_path.parent),
        }
        airflow = LocalAirflow(home, port=free_port(), fast=True, extra_env=settings, workers=workers)
        try:
            airflow.start()
            print(f"distributed Airflow healthy after {time.monotonic() - started:.1f}s")
            yield airflow
        finally:
            airflow.stop()
    assert processes_with_env("AIRFLOW_HOME", str(airflow.home)) == {}
    assert processes_with_env("AIRFLOW__CELERY__BROKER_URL", broker) == {}


@pytest.fixture(scope="module")
def backfill_runs(celery) -> list[dict]:
    """Unpauses the DAG, backfills DATES on the Celery workers, waits; returns every run of the DAG."""
    api = AirflowApi(celery.url)
    api.wait_for_dag(DAG_ID)
    started = time.monotonic()
    # Runs of a paused DAG, backfills included, stay queued. Unpausing also schedules the latest
    # interval (catchup is off): a scheduled run beside the backfill, on the same workers (two when
    # the test spans midnight UTC).
    api.unpause(DAG_ID)
    celery.cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1])
    runs = api.wait_for_runs(DAG_ID, len(DATES) + 1, timeout=420)
    api.wait_for_backfills(DAG_ID)
    print(f"{len(DATES)}-date backfill + scheduled runs on Celery: {time.monotonic() - started:.1f}s")
    return runs


def test_backfill_runs_on_two_celery_workers(celery, backfill_runs, pipeline, store):
    """Every run succeeds; train runs on the training worker, every other task on the default one."""
    api, runs = AirflowApi(celery.url), backfill_runs
    for run in runs:
        assert run["state"] == "success", api.failure_report(DAG_ID, run["dag_run_id"])
    backfills = [run for run in runs if run["run_type"] == "backfill"]
    assert [run["logical_date"][:10] for run in backfills] == DATES
    # Unpausing scheduled the latest interval; if midnight UTC passed meanwhile, @daily ticked again.
    scheduled = [run["run_type"] for run in runs if run not in backfills]
    assert scheduled and set(scheduled) == {"scheduled"}

    instances = [ti for run in runs for ti in api.task_instances(DAG_ID, run["dag_run_id"])]
    assert len(instances) == 5 * len(runs)
    per_worker = collections.Counter(ti["hostname"] for ti in instances)
    print(f"task instances per worker: {dict(per_worker)}")
    # Every task ran on a Celery worker (their own hostnames, not this machine's): train on the
    # training queue's worker, every other task on the default queue's.
    assert set(per_worker) == {"worker-default", "worker-training"}
    for ti in instances:
        if ti["task_id"] == "train":
            assert (ti["queue"], ti["hostname"]) == (pipeline.operations.training_queue, "worker-training")
        else:
            assert (ti["queue"], ti["hostname"]) == (DEFAULT_QUEUE, "worker-default")

    model_dir = store / "serving" / pipeline.model.name
    manifest = read_manifest(model_dir)
    by_run = {run["dag_run_id"]: run for run in runs}
    versions = [d.replace("-", "") + "000000" for d in DATES]
    assert set(versions) < set(manifest["versions"]) and len(manifest["versions"]) == len(runs)
    for version, entry in manifest["versions"].items():
        run = by_run[entry["run_id"]]
        assert entry["status"] == "published" and entry["run_type"] == run["run_type"]
        assert entry["logical_date"] == run["logical_date"].replace("Z", "+00:00")
        assert entry["content_digest"] == content_digest(model_dir / version)
        assert_complete(model_dir / version)
    assert [manifest["versions"][v]["data"]["last_partition"] for v in versions] == [
        "dt=2026-10-09",
        "dt=2026-10-10",
        "dt=2026-10-11",
        "dt=2026-10-12",
    ]


def test_workers_preload_tensorflow(celery, backfill_runs):
    """airflow.env's Celery config imports TensorFlow in each worker before it forks its pool.

    After the backfill: both workers' main processes have TensorFlow's library mapped, and
    every train (worker-training) and validate_signatures (worker-default) task logged that it
    inherited TensorFlow instead of importing it.
    """
    mains = {  # Celery's process title of a worker's main process
        pid: command
        for pid, command in processes_with_env("AIRFLOW_HOME", str(celery.home)).items()
        if command.startswith("[celeryd:") and ":MainProcess]" in command
    }
    assert len(mains) == 2 and all(has_tensorflow_loaded(pid) for pid in mains), mains
    logs = {
        task: sorted(
            (celery.home / "logs" / f"dag_id={DAG_ID}").glob(f"run_id=*/task_id={task}/attempt=*.log")
        )
        for task in ("train", "validate_signatures")
    }
    for task, files in logs.items():
        assert len(files) == len(backfill_runs), (task, files)
        for path in files:
            text = path.read_text()
            assert PRELOADED in text and NOT_PRELOADED not in text, path
