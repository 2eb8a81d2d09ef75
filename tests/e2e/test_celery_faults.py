"""Cluster faults on the native Celery stack: an engine component dies mid-run, the run still ends right.

The stack of tests/e2e/test_celery.py (PostgreSQL and Redis from Debian's packages, settings from
`airflow.env`, api-server, scheduler, dag-processor, triggerer, a `default`-queue and a
`training`-queue Celery worker), started once for the module. Compose's `restart: always` is
played by a thread that starts every Airflow component that exits again, with the same command
and environment (`LocalAirflow.restart_exited`). Each test triggers one run of its own DAG (own
model name and roots, so each passes alone), holds `train` in its training loop at the failpoint
`train.loop` (include/failpoints.py: armed by the test, reached by the task, released by the test
once the fault is in), injects one fault and then requires:
the run `success`, every task instance `success` (retried where needed), exactly one version
published with one manifest entry, and no staging or temp dirs (`tests.helpers.LEFTOVER_PATTERNS`)
under the serving root or the run's work dir.

In `make test` (4 to 8 minutes on 2 shared cores); one test alone:
`pytest tests/e2e/test_celery_faults.py -k worker`. The multi-host faults (a worker killed or cut
off mid-upload to a bucket) are in tests/multihost/test_pipeline.py.

The faults, each checked to have happened:

- the training worker SIGKILLed with every process it started (Celery main process, pool
  processes, and the task process, which Airflow's supervisor puts in a process group of its
  own), then started again: the killed pids are gone, `train` has 2 tries (the first one never
  logged its summary);
- the scheduler SIGKILLed and started again: a new pid; the later tasks were queued after it;
- PostgreSQL stopped by a fast shutdown (SIGINT to the postmaster: sessions ended at once),
  down 5 s, started again on the same data dir and port: a new "fast shutdown" in its log;
- Redis stopped (SIGTERM), down 5 s, started again on the same port. It persists nothing here,
  so everything it held is gone (the running task's unacked message, Celery's queue bindings):
  stricter than compose's image, which saves a snapshot on shutdown.

Settings changed from `airflow.env` (besides the addresses and the polling intervals of
test_celery.py):

- `[scheduler] task_instance_heartbeat_timeout` 300 -> 30 s: how long a `running` task instance
  may go without a heartbeat before the scheduler fails it (and so retries it). A killed
  worker's task is noticed after this; with the default the worker test would wait 5 minutes.
  Safe: a live task's supervisor heartbeats every `[workers] min_heartbeat_interval` (5 s), so
  it would have to miss 6 in a row; the 5 s PostgreSQL outage costs at most one or two.
- the pipelines' `retry_delay_minutes: 0` (a YAML value, not an Airflow setting): the retried
  `train` starts at once instead of after 1 minute.

Not changed: Celery's `task_acks_late` (Airflow's default: on) and the broker's visibility
timeout (Airflow's default: 24 h). A killed worker's unacked message is not redelivered within
the test; if it were, the execution API would refuse to start a try that is no longer queued.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from include.config import PipelineConfig, load_pipeline_config
from include.registry.store import read_manifest
from include.savedmodel.files import content_digest
from include.versions import is_version_name, model_dir, run_work_dir
from tests.e2e.airflow_api import FINISHED, AirflowApi, ApiError
from tests.e2e.native_services import NativeServer, postgres_service, processes_with_env, redis_service
from tests.helpers import assert_complete, leftovers, make_raw, write_pipeline
from tools.local_airflow import SETTINGS_FILE, CeleryWorker, LocalAirflow, free_port, read_env_file

pytestmark = pytest.mark.e2e

SETTINGS = read_env_file(SETTINGS_FILE)
FAULTS = ("worker_kill", "scheduler_kill", "postgres_restart", "redis_restart")
TASKS = ("train", "validate_signatures", "export_savedmodel", "wait_for_version", "publish_version")
LOGICAL_DATE = "2026-11-01T00:00:00Z"
VERSION = "20261101000000"
TRAIN_STEPS = 2_000
HEARTBEAT_TIMEOUT_S = 30
#: How long PostgreSQL and Redis stay down when restarted (a container restart takes seconds too).
DOWN_S = 5
#: Until every component is healthy and both workers are ready (each imports TensorFlow): 30 s on
#: an idle machine, minutes when the 2 cores are shared.
STARTUP_TIMEOUT_S = 420


@dataclass
class Stack:
    """The running stack: Airflow, its database and broker, an API client, and the restarts made."""

    airflow: LocalAirflow
    db: NativeServer
    broker: NativeServer
    api: AirflowApi
    restarts: list[tuple[float, str]]  # (time.monotonic(), component) started again after an exit


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, example_data) -> dict[str, PipelineConfig]:
    """One pipeline per fault, DAG id and model `fault_<fault>`, each with its own roots."""
    folder, store = tmp_path_factory.mktemp("pipelines"), tmp_path_factory.mktemp("store")
    configs = {}
    for fault in FAULTS:
        name = f"fault_{fault}"
        raw = make_raw(store / name, example_data, name=name, schedule=None, retry_delay_minutes=0)
        raw["model"]["name"] = name
        raw["training"].update(steps=TRAIN_STEPS, log_every_steps=200)
        configs[fault] = load_pipeline_config(write_pipeline(folder, raw))
    return configs


@pytest.fixture(scope="module")
def failpoints(tmp_path_factory) -> Path:
    """The failpoints dir of every task of the stack (SAVEDMODEL_FAILPOINTS)."""
    return tmp_path_factory.mktemp("failpoints")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pipelines, failpoints) -> Iterator[Stack]:
    """Yields the Celery stack with `restart: always`; on exit asserts nothing it started is left running."""
    home = tmp_path_factory.mktemp("celery-faults-home")
    training_queue = next(iter(pipelines.values())).operations.training_queue
    workers = (
        CeleryWorker("worker-default", (SETTINGS["AIRFLOW__OPERATORS__DEFAULT_QUEUE"],)),
        CeleryWorker("worker-training", (training_queue,), concurrency=1),
    )
    folder = next(iter(pipelines.values())).source_path.parent
    with postgres_service(secrets.token_hex(12)) as db, redis_service() as broker:
        settings = {
            **SETTINGS,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db.url}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db.url}",
            "AIRFLOW__CELERY__BROKER_URL": broker.url,
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "SAVEDMODEL_PIPELINES_DIR": str(folder),
            "SAVEDMODEL_FAILPOINTS": str(failpoints),
        }
        airflow = LocalAirflow(home, port=free_port(), fast=True, extra_env=settings, workers=workers)
        try:
            started = time.monotonic()
            airflow.start(timeout=STARTUP_TIMEOUT_S)
            print(f"Celery stack healthy after {time.monotonic() - started:.1f}s")
            with restart_always(airflow) as restarts:
                yield Stack(airflow, db, broker, AirflowApi(airflow.url), restarts)
        finally:
            airflow.stop()
            left = processes_with_env("AIRFLOW_HOME", str(airflow.home))
            for pid in left:  # never leave a training process behind on a shared machine
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
    assert left == {}


@contextlib.contextmanager
def restart_always(airflow: LocalAirflow, interval: float = 1.0) -> Iterator[list[tuple[float, str]]]:
    """Plays compose's `restart: always`: a thread starts every component that exits again.

    Yields the list of restarts it makes, (time.monotonic(), component), as they happen.
    """
    restarts: list[tuple[float, str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            restarts.extend((time.monotonic(), name) for name in airflow.restart_exited())

    thread = threading.Thread(target=watch, name="restart-always", daemon=True)
    thread.start()
    try:
        yield restarts
    finally:
        done.set()
        thread.join()


# --- the tests ------------------------------------------------------------------------------------


def test_training_worker_killed_mid_train(stack, pipelines, failpoints):
    """SIGKILL of the training worker and its task mid-train: train is retried, one version is published."""
    config, started = pipelines["worker_kill"], time.monotonic()
    run_id = trigger(stack, config, failpoints)
    ti = wait_for_training(stack, config, run_id, failpoints)
    old = stack.airflow.processes["worker-training"].pid

    killed = stack.airflow.kill("worker-training")
    release(failpoints)

    assert {old, ti["pid"]} <= killed, (killed, ti["pid"])
    assert wait_until(lambda: not any(is_running(pid) for pid in killed), 10), killed
    assert wait_until(lambda: is_running(stack.airflow.processes["worker-training"].pid), 30)
    wait_for_run(stack, config, run_id, timeout=360)
    tries = stack.api.get(task_path(config, run_id, "train") + "/tries")["task_instances"]
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tries[0]["state"] != "success" and tries[1]["hostname"] == "worker-training", tries
    assert "savedmodel-summary: train" not in task_log(stack, config, run_id, "train", 1).read_text()
    report("worker", stack, started, killed=len(killed), tries=assert_published_once(stack, config, run_id))


def test_scheduler_killed_mid_run(stack, pipelines, failpoints):
    """SIGKILL of the scheduler mid-run, started again: the run completes, one version is published."""
    config, started = pipelines["scheduler_kill"], time.monotonic()
    run_id = trigger(stack, config, failpoints)
    wait_for_training(stack, config, run_id, failpoints)
    old = stack.airflow.processes["scheduler"].pid

    fault_at = now()
    killed = stack.airflow.kill("scheduler")
    release(failpoints)

    assert old in killed and wait_until(lambda: not any(is_running(pid) for pid in killed), 10)
    assert wait_until(lambda: is_running(stack.airflow.processes["scheduler"].pid), 30)
    wait_for_run(stack, config, run_id)
    tries = assert_published_once(stack, config, run_id)
    assert_ran_after(stack, config, run_id, fault_at)
    report("scheduler", stack, started, tries=tries)


def test_postgres_restarted_mid_run(stack, pipelines, failpoints):
    """PostgreSQL fast shutdown and start mid-run: the run completes, nothing is published twice."""
    config, started = pipelines["postgres_restart"], time.monotonic()
    run_id = trigger(stack, config, failpoints)
    wait_for_training(stack, config, run_id, failpoints)
    old, shutdowns = stack.db.pid, count_in_log(stack.db, "received fast shutdown request")

    fault_at = now()
    new = stack.db.restart(down_for=DOWN_S)
    release(failpoints)

    assert new != old and not is_running(old)
    assert count_in_log(stack.db, "received fast shutdown request") == shutdowns + 1
    wait_for_run(stack, config, run_id)
    tries = assert_published_once(stack, config, run_id)
    assert_ran_after(stack, config, run_id, fault_at)
    report("postgres", stack, started, tries=tries)


def test_redis_restarted_mid_run(stack, pipelines, failpoints):
    """Redis restarted empty mid-run: no task is lost, every task ends success (retried at most)."""
    config, started = pipelines["redis_restart"], time.monotonic()
    run_id = trigger(stack, config, failpoints)
    wait_for_training(stack, config, run_id, failpoints)
    old, starts = stack.broker.pid, count_in_log(stack.broker, "Ready to accept connections")

    fault_at = now()
    new = stack.broker.restart(down_for=DOWN_S)
    release(failpoints)

    assert new != old and not is_running(old)
    assert count_in_log(stack.broker, "Ready to accept connections") == starts + 1
    wait_for_run(stack, config, run_id)
    tries = assert_published_once(stack, config, run_id)
    assert_ran_after(stack, config, run_id, fault_at)  # sent through the new, empty broker
    report("redis", stack, started, tries=tries)


# --- helpers --------------------------------------------------------------------------------------


def trigger(stack: Stack, config: PipelineConfig, failpoints: Path) -> str:
    """Arms `train.loop`, unpauses the pipeline's DAG, triggers one run dated LOGICAL_DATE; returns its id."""
    for old in failpoints.glob("train.loop.*"):
        old.unlink()
    (failpoints / "train.loop.armed").touch()
    stack.api.wait_for_dag(config.dag_id)
    stack.api.unpause(config.dag_id)
    return stack.api.trigger(config.dag_id, logical_date=LOGICAL_DATE)


def task_path(config: PipelineConfig, run_id: str, task_id: str) -> str:
    """Returns the REST path of one task instance."""
    return f"/api/v2/dags/{config.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"


def task_log(stack: Stack, config: PipelineConfig, run_id: str, task_id: str, attempt: int) -> Path:
    """Returns the log file of one try of a task (written by the worker that ran it)."""
    run = stack.airflow.home / "logs" / f"dag_id={config.dag_id}" / f"run_id={run_id}"
    return run / f"task_id={task_id}" / f"attempt={attempt}.log"


def release(failpoints: Path) -> None:
    """Lets a task held at `train.loop` go on (a killed one is gone; its retry passes the point)."""
    (failpoints / "train.loop.release").touch()


def wait_for_training(
    stack: Stack, config: PipelineConfig, run_id: str, failpoints: Path, timeout: float = 240
) -> dict:
    """Waits until train's first try is held in its training loop (failpoint reached); returns it."""
    reached = failpoints / "train.loop.reached"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            ti = stack.api.get(task_path(config, run_id, "train"))
        except ApiError as err:  # 404 until the scheduler has created the run's task instances
            if err.status == 404:
                continue
            raise
        if ti["state"] == "running" and reached.is_file() and reached.read_text().strip():
            return ti
        assert ti["state"] not in {*FINISHED, "up_for_retry"}, f"train ended before the fault: {ti}"
    raise TimeoutError(f"{config.dag_id}: train not in its training loop after {timeout:.0f}s")


def wait_for_run(stack: Stack, config: PipelineConfig, run_id: str, timeout: float = 300) -> dict:
    """Waits until the run is finished and returns it; API errors while a service is down are retried."""
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiError, OSError):  # 5xx or refused while PostgreSQL is restarted
            run = stack.api.get(f"/api/v2/dags/{config.dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED:
                return run
        time.sleep(2)
    raise TimeoutError(f"{config.dag_id}: run not finished after {timeout:.0f}s: {run.get('state')}")


def assert_published_once(stack: Stack, config: PipelineConfig, run_id: str) -> dict[str, int]:
    """Asserts a run succeeded, published its version once and left nothing; returns tries per task."""
    instances = {ti["task_id"]: ti for ti in stack.api.task_instances(config.dag_id, run_id)}
    assert {task: ti["state"] for task, ti in instances.items()} == dict.fromkeys(TASKS, "success")
    base = model_dir(config.storage.serving_root, config.model.name)
    manifest = read_manifest(base)
    assert list(manifest["versions"]) == [VERSION], manifest["versions"].keys()
    entry = manifest["versions"][VERSION]
    assert (entry["run_id"], entry["status"]) == (run_id, "published")
    if instances["publish_version"]["try_number"] == 1:
        assert entry["last_publish"] == "published", entry["last_publish"]
    assert [path.name for path in base.iterdir() if is_version_name(path.name)] == [VERSION]
    assert_complete(base / VERSION)
    assert entry["content_digest"] == content_digest(base / VERSION)
    moves = sorted(e["label"] for e in manifest["history"] if e["event"] == "label")
    assert moves == ["canary", "stable"], manifest["history"]
    work_dir = run_work_dir(config.storage.export_root, config.model.name, run_id)
    assert leftovers(Path(config.storage.serving_root)) == [] and leftovers(work_dir) == []
    return {task: ti["try_number"] for task, ti in instances.items()}


def assert_ran_after(stack: Stack, config: PipelineConfig, run_id: str, fault_at: dt.datetime) -> None:
    """Asserts the fault hit mid-run: train ended, and the tasks after it were queued, after the fault."""
    instances = {ti["task_id"]: ti for ti in stack.api.task_instances(config.dag_id, run_id)}
    assert parse_time(instances["train"]["end_date"]) > fault_at, instances["train"]
    for task in TASKS[1:]:
        assert parse_time(instances[task]["queued_when"]) > fault_at, instances[task]


def report(test: str, stack: Stack, started: float, **figures) -> None:
    """Prints a test's figures: its wall time and the components `restart: always` started again."""
    restarted = [name for at, name in stack.restarts if at >= started]
    print(f"{test}: {time.monotonic() - started:.0f}s, restarted {restarted}, {figures}")


def count_in_log(server: NativeServer, text: str) -> int:
    """Returns how often a server's log holds `text`."""
    return server.log.read_text(errors="replace").count(text)


def is_running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Returns whether `condition()` became true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def now() -> dt.datetime:
    """Returns the current time in UTC (the API's timestamps are UTC)."""
    return dt.datetime.now(dt.UTC)


def parse_time(value: str) -> dt.datetime:
    """Returns an API timestamp as an aware datetime."""
    return dt.datetime.fromisoformat(value)
