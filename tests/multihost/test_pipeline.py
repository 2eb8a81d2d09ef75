"""The example pipeline on hosts that share no disk: data, runs and models in a GCS bucket.

The cluster of tests/multihost/conftest.py: a storage host (fake-gcs-server), a db host
(PostgreSQL, Redis), an airflow host (api-server, scheduler, dag-processor, triggerer) and two
Celery worker hosts, each with its own `build/`, `data/` and `/tmp`. The pipeline reads its data
from `gs://models-gcs/data/digits`, keeps its runs under `gs://models-gcs/exports` and publishes
to `gs://models-gcs/serving`, which TF Serving would read as its base path. `train` runs on
worker-training, every other task (the deferred sensor in the triggerer) elsewhere: a run moves
between hosts through the bucket only.

Faults are injected where the test chooses, through failpoints (include/failpoints.py) armed in
the worker host's own /tmp: the task stops at the point, the test sees `<point>.reached` there,
then injects its fault. After each: every run completes (retried where needed), no version prefix
holds a saved_model.pb of an incomplete version, no version is lost or duplicated, and the registry
reads clean.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from include.registry.serving_config import read_models_config
from include.registry.store import read_manifest, version_dirs
from include.savedmodel.files import SAVED_MODEL_PB, content_digest, missing_parts
from include.storage import objects
from include.storage.connections import use_connection
from include.storage.location import BucketURI
from plugins.savedmodel_tasks import PRELOADED
from tests.e2e.airflow_api import AirflowApi
from tests.helpers import make_raw, write_pipeline
from tests.multihost.conftest import FAILPOINTS_DIR
from tests.multihost.services import MultiHostCluster

pytestmark = [pytest.mark.e2e, pytest.mark.multihost]

DAG_ID = "hosts_digits"
DATES = ["2026-10-10", "2026-10-11", "2026-10-12"]
BUCKET = BucketURI("gs://models-gcs")
DATA = BUCKET / "data" / "digits"
SERVING = BUCKET / "serving"
MODEL_DIR = SERVING / DAG_ID
#: This process's name for the cluster's GCS connection (`gcs_test` on the hosts; another test
#: module may have bound that id to the loopback emulator in this process).
TEST_CONN = "multihost_gcs"
#: How long the link-cut test keeps a worker off the network (past the 30 s heartbeat timeout).
CUT_S = 40


def version_of(date: str) -> int:
    return int(date.replace("-", "") + "000000")


@pytest.fixture(scope="module")
def bucket_access(multihost: MultiHostCluster) -> None:
    """Lets this process read and write the cluster's bucket (as a user's laptop would)."""
    extra = {"anonymous": True, "endpoint_url": multihost.gcs.url, "project": "test"}
    os.environ[f"AIRFLOW_CONN_{TEST_CONN.upper()}"] = json.dumps(
        {"conn_type": "google_cloud_platform", "extra": extra}
    )
    use_connection(str(BUCKET), TEST_CONN)


@pytest.fixture(scope="module")
def pipeline(multihost: MultiHostCluster, bucket_access, example_data) -> dict:
    """Uploads the example data into the bucket and writes the pipeline YAML every host reads."""
    for file in sorted(p for p in example_data.rglob("*") if p.is_file()):
        objects.upload_file(file, DATA / file.relative_to(example_data).as_posix())
    raw = make_raw(Path("/unused"), example_data, name=DAG_ID, schedule="@daily", retry_delay_minutes=0)
    raw["model"]["name"] = DAG_ID
    raw["data"].update(location=str(DATA), connection=multihost.gcs.connection)
    raw["storage"] = {
        "export_root": str(BUCKET / "exports"),
        "serving_root": str(SERVING),
        "connection": multihost.gcs.connection,
    }
    raw["training"]["steps"] = 300
    raw["serving"]["keep_versions"] = 20
    raw["operations"]["sensor_mode"] = "deferrable"  # the sensor waits in the triggerer, on its host
    raw["operations"]["retry_backoff_multiplier"] = 0
    write_pipeline(multihost.pipelines_dir, raw)
    return raw


@pytest.fixture(scope="module")
def backfill_runs(multihost: MultiHostCluster, pipeline) -> list[dict]:
    """Unpauses the DAG (one scheduled run), backfills DATES; returns every run once all ended."""
    api = multihost.api
    api.wait_for_dag(DAG_ID, timeout=180)
    started = time.monotonic()
    api.unpause(DAG_ID)
    multihost.airflow.cli(
        "backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1]
    )
    runs = api.wait_for_runs(DAG_ID, len(DATES) + 1, timeout=600)
    api.wait_for_backfills(DAG_ID, timeout=600)
    print(f"{len(DATES)}-date backfill + scheduled run across hosts: {time.monotonic() - started:.1f}s")
    return runs


def published(version: int) -> list[str]:
    """Returns the relative names of the objects under a version prefix."""
    prefix = MODEL_DIR / str(version)
    return [s.uri.relative_to(prefix) for s in objects.listing(prefix)]


def fetch(version: int, target: Path) -> Path:
    """Returns a fresh local copy of a published version (what TF Serving reads from the bucket)."""
    objects.download_tree(MODEL_DIR / str(version), target)
    return target


def assert_registry_clean(versions: set[int]) -> dict:
    """The registry reads, lists exactly `versions`, each complete; models.config serves labels."""
    manifest = read_manifest(MODEL_DIR)
    assert {int(v) for v in manifest["versions"]} == versions
    assert set(version_dirs(MODEL_DIR)) == versions
    for version in versions:
        assert SAVED_MODEL_PB in published(version)
        assert manifest["versions"][str(version)]["status"] == "published"
    (config,) = read_models_config(SERVING).model_config_list.config
    assert config.base_path == str(MODEL_DIR)
    assert set(dict(config.version_labels).values()) <= versions
    return manifest


def test_a_scheduled_run_and_a_backfill_publish_into_the_bucket_across_hosts(multihost, backfill_runs):
    api: AirflowApi = multihost.api
    for run in backfill_runs:
        assert run["state"] == "success", api.failure_report(DAG_ID, run["dag_run_id"])
    hosts = {}
    for run in backfill_runs:
        for ti in api.task_instances(DAG_ID, run["dag_run_id"]):
            hosts.setdefault(ti["task_id"], set()).add(ti["hostname"])
    assert hosts["train"] == {"worker-training"}
    for task in ("validate_signatures", "export_savedmodel", "publish_version"):
        assert hosts[task] == {"worker-default"}, (task, hosts)
    versions = {int(v) for v in read_manifest(MODEL_DIR)["versions"]}
    assert {version_of(d) for d in DATES} < versions and len(versions) == len(backfill_runs)
    assert_registry_clean(versions)
    # Nothing of the runs on any worker's own disk is needed: their /tmp copies are gone.
    for host in ("worker-default", "worker-training"):
        left = multihost.run(host, ["sh", "-c", "find /tmp -name run.json | wc -l"])
        assert left.stdout.strip() == "0", host


def test_the_published_version_fetched_fresh_loads_and_answers(multihost, backfill_runs, tmp_path):
    import numpy as np
    import tensorflow as tf

    manifest = read_manifest(MODEL_DIR)
    stable = manifest["labels"]["stable"]
    local = fetch(stable, tmp_path / str(stable))
    assert missing_parts(local) == []
    assert content_digest(local) == manifest["versions"][str(stable)]["content_digest"]
    loaded = tf.saved_model.load(str(local), tags=["serve"])
    scores = loaded.signatures["predict_images"](images=tf.constant(np.zeros((2, 64), np.float32)))["scores"]
    assert scores.shape == (2, 10)
    np.testing.assert_allclose(scores.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_what_a_run_across_hosts_costs_beside_the_bare_script(multihost, pipeline, backfill_runs):
    """One run on the cluster vs the bare script on the training host, same bucket data and steps.

    Prints and writes test-artifacts/multihost-timings.json (docs/performance.md quotes it): the
    run's trigger-to-success time, each task's duration, the time outside tasks, the bare script's.
    """
    config = multihost.pipelines_dir / f"{DAG_ID}.yaml"
    started = time.monotonic()
    bare_script = [sys.executable, "bench/bare_tutorial.py", str(config), "/tmp/bare-export"]
    multihost.run("worker-training", bare_script, timeout=600)
    bare = time.monotonic() - started
    started = time.monotonic()
    run_id = multihost.api.trigger(DAG_ID, logical_date="2026-11-01T00:00:00Z")  # the bare script's date
    run = multihost.api.wait_for_run(DAG_ID, run_id, timeout=600)
    cluster = time.monotonic() - started
    assert run["state"] == "success", multihost.api.failure_report(DAG_ID, run_id)
    tasks = {ti["task_id"]: ti["duration"] or 0.0 for ti in multihost.api.task_instances(DAG_ID, run_id)}
    preloaded = multihost.run(
        "worker-training", ["sh", "-c", f"grep -rl '{PRELOADED}' /tmp/airflow/logs | wc -l"]
    ).stdout.strip()
    figures = {
        "bare_script_s": round(bare, 2),
        "cluster_run_s": round(cluster, 2),
        "cluster_over_bare": round(cluster / bare, 2),
        "tasks_s": {k: round(v, 2) for k, v in tasks.items()},
        "outside_tasks_s": round(cluster - sum(tasks.values()), 2),
        "train_logs_with_tensorflow_preloaded": int(preloaded),
    }
    print(json.dumps(figures, indent=2))
    out = Path(__file__).resolve().parents[2] / "test-artifacts" / "multihost-timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    assert int(preloaded) >= 1  # the training worker's tasks inherit TensorFlow, never import it


def arm(multihost: MultiHostCluster, host: str, point: str) -> None:
    multihost.run(host, ["sh", "-c", f"mkdir -p {FAILPOINTS_DIR} && rm -f {FAILPOINTS_DIR}/{point}.* "
                                    f"&& touch {FAILPOINTS_DIR}/{point}.armed"])  # fmt: skip


def wait_reached(
    multihost: MultiHostCluster, host: str, point: str, run_id: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while multihost.run(host, ["test", "-e", f"{FAILPOINTS_DIR}/{point}.reached"], check=False).returncode:
        run = multihost.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert run["state"] in ("queued", "running"), multihost.api.failure_report(DAG_ID, run_id)
        assert time.monotonic() < deadline, f"{point} not reached on {host} after {timeout:.0f}s"
        time.sleep(0.5)


def release(multihost: MultiHostCluster, host: str, point: str) -> None:
    multihost.run(host, ["touch", f"{FAILPOINTS_DIR}/{point}.release"])


def try_numbers(multihost: MultiHostCluster, run_id: str) -> dict[str, int]:
    return {ti["task_id"]: ti["try_number"] for ti in multihost.api.task_instances(DAG_ID, run_id)}


def test_a_worker_sigkilled_mid_upload_leaves_nothing_loadable_and_the_retry_completes_it(
    multihost, backfill_runs
):
    before = {int(v) for v in read_manifest(MODEL_DIR)["versions"]}
    version = version_of("2026-10-20")
    arm(multihost, "worker-default", "publish.upload")
    run_id = multihost.api.trigger(DAG_ID, logical_date="2026-10-20T00:00:00Z")
    wait_reached(multihost, "worker-default", "publish.upload", run_id)
    held = published(version)
    assert held and SAVED_MODEL_PB not in held  # mid-upload: objects there, never saved_model.pb
    multihost.hosts["worker-default"].kill_all(grace=0)  # SIGKILL: the worker and its task die
    assert SAVED_MODEL_PB not in published(version)
    assert version not in {int(v) for v in read_manifest(MODEL_DIR)["versions"]}
    multihost.airflow.start_worker("worker-default")
    run = multihost.api.wait_for_run(DAG_ID, run_id, timeout=420)
    assert run["state"] == "success", multihost.api.failure_report(DAG_ID, run_id)
    assert try_numbers(multihost, run_id)["publish_version"] == 2
    assert_registry_clean(before | {version})


def test_a_worker_cut_off_from_the_bucket_mid_upload_fails_clearly_and_the_retry_completes_it(
    multihost, backfill_runs
):
    before = {int(v) for v in read_manifest(MODEL_DIR)["versions"]}
    version = version_of("2026-10-21")
    worker = multihost.hosts["worker-default"]
    arm(multihost, "worker-default", "publish.upload")
    run_id = multihost.api.trigger(DAG_ID, logical_date="2026-10-21T00:00:00Z")
    wait_reached(multihost, "worker-default", "publish.upload", run_id)
    worker.link_down()
    try:
        release(multihost, "worker-default", "publish.upload")  # the upload goes on, into no network
        # Longer than the scheduler's heartbeat timeout (30 s): the task is failed and retried
        # while the cut-off try may still finish its upload once the link is back; the lease and
        # the conditional head keep the two tries from both committing.
        time.sleep(CUT_S)
        assert SAVED_MODEL_PB not in published(version)
    finally:
        worker.link_up()
    run = multihost.api.wait_for_run(DAG_ID, run_id, timeout=420)
    assert run["state"] == "success", multihost.api.failure_report(DAG_ID, run_id)
    tries = try_numbers(multihost, run_id)["publish_version"]
    print(f"cut off {CUT_S}s mid-upload: publish_version took {tries} tries")
    assert_registry_clean(before | {version})


RACER = textwrap.dedent(
    """
    import sys, tempfile
    from include.storage.connections import use_connection
    from include.storage import objects
    from include.storage.location import BucketURI
    model_dir, conn, action, source, target = sys.argv[1:6]
    use_connection(model_dir, conn)
    serving = BucketURI(model_dir).parent
    if action == "publish":
        from include.registry.publish import publish_version
        with tempfile.TemporaryDirectory() as tmp:
            objects.download_tree(BucketURI(model_dir) / source, tmp)
            result = publish_version(tmp, serving, BucketURI(model_dir).name, int(target), keep_versions=20)
        print(result.status, result.version)
    else:
        from include.registry.policy import set_label
        from include.registry.serving_config import write_models_config
        set_label(model_dir, "stable", int(target), by="racer", reason="race")
        write_models_config(serving)
        print("moved", target)
    """
)


def test_two_publishers_and_a_label_move_racing_from_three_hosts_lose_nothing(multihost, backfill_runs):
    manifest = read_manifest(MODEL_DIR)
    before = {int(v) for v in manifest["versions"]}
    source = str(manifest["labels"]["canary"])
    rollback = min(before)
    news = [version_of("2099-01-01"), version_of("2099-01-02")]  # newer than any: canary moves too
    conn = multihost.gcs.connection
    racers = [
        ("worker-default", ["publish", source, str(news[0])]),
        ("worker-training", ["publish", source, str(news[1])]),
        ("airflow", ["label", "-", str(rollback)]),
    ]
    processes = [
        multihost.popen(host, [sys.executable, "-c", RACER, str(MODEL_DIR), conn, *args], log=f"racer-{n}")
        for n, (host, args) in enumerate(racers)
    ]
    for process in processes:
        assert process.wait(300) == 0, Path(process.log_path).read_text()[-3000:]
    manifest = assert_registry_clean(before | set(news))
    assert manifest["labels"]["stable"] == rollback
    assert manifest["labels"]["canary"] == max(news)
    moves = [e for e in manifest["history"] if e.get("by") == "racer"]
    assert len(moves) == 1 and moves[0]["version"] == rollback
    (config,) = read_models_config(SERVING).model_config_list.config
    assert dict(config.version_labels)["stable"] == rollback
