"""A run whose work dir is in a bucket: each step on its own "host", sharing nothing but the bucket.

Every step below runs with its own local mirror root ($SAVEDMODEL_LOCAL_RUNS), and the previous
step's mirror is deleted before the next step starts: a step that read a file another step left
on a local disk would fail. The bucket is the run's home (include/run/workdir.py); the serving
root stays local (publishing into a bucket is the registry's part).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from include.errors import PreflightError, RunRecordError, StorageError
from include.registry.store import read_manifest
from include.run import workdir
from include.run.preflight import preflight_storage
from include.run.record import RunIdentity, load_run, start_run
from include.run.steps import export_run, publish_run, train_run, validate_run
from include.storage import objects
from include.storage.connections import use_connection
from include.storage.location import BucketURI
from include.versions import runs_dir
from plugins.savedmodel_sensors import SavedModelVersionSensor
from plugins.savedmodel_triggers import SavedModelVersionTrigger
from tests.buckets import GCS_CONN, S3_CONN
from tests.helpers import make_raw, write_pipeline

LOGICAL_DATE = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
VERSION = "20261020000000"


def conn_of(bucket: str) -> str:
    return GCS_CONN if bucket.startswith("gs://") else S3_CONN


class Hosts:
    """Switches the "host" a step runs on: a mirror root of its own; the previous host's is deleted."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.monkeypatch, self.current = root, monkeypatch, None

    def use(self, name: str) -> Path:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
        self.current = self.root / name
        self.current.mkdir(parents=True)
        self.monkeypatch.setenv(workdir.MIRROR_ENV, str(self.current))
        return self.current


@pytest.fixture
def hosts(tmp_path, monkeypatch) -> Hosts:
    return Hosts(tmp_path / "hosts", monkeypatch)


@pytest.fixture
def pipeline_file(tmp_path, example_data, bucket) -> Path:
    """The example pipeline with export_root in the bucket (opened by its connection), serving_root local."""
    raw = make_raw(tmp_path, example_data)
    raw["storage"] = {
        "export_root": f"{bucket}/exports",
        "serving_root": str(tmp_path / "serving"),
        "connection": conn_of(bucket),
    }
    return write_pipeline(tmp_path / "pipelines", raw)


def begin(pipeline_file: Path, bucket: str):
    """Starts the run as its train task does: the record in the bucket, XCom's value its URI."""
    run = RunIdentity("digits_softmax", "manual__2026-10-20", "manual", LOGICAL_DATE.isoformat())
    runs = runs_dir(f"{bucket}/exports", "digits")
    return start_run(pipeline_file, str(runs), run, {}, LOGICAL_DATE, LOGICAL_DATE)


def keys(prefix: BucketURI) -> set[str]:
    return {found.uri.relative_to(prefix) for found in objects.listing(prefix)}


def test_a_run_in_a_bucket_publishes_with_every_step_on_another_host(pipeline_file, bucket, hosts):
    """train, validate, export, the sensor and publish each on a fresh host; the bucket holds the run."""
    home = hosts.use("train")
    record = begin(pipeline_file, bucket)
    assert isinstance(record.path, BucketURI) and record.path.startswith(f"{bucket}/exports/digits/runs/")
    assert record.home.is_relative_to(home)
    trained = train_run(record)
    assert trained["checkpoint"] == f"{record.work_dir}/checkpoint/model.ckpt"
    uri, export_uri = str(record.path), str(record.export_dir)  # what XCom hands on

    hosts.use("validate")
    assert validate_run(load_run(uri))["verdict"] == "passed"

    hosts.use("export")
    exported = export_run(load_run(uri))
    assert exported["export_dir"] == export_uri and not exported["reused"]

    hosts.use("sensor")
    sensor = SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=export_uri, conn_id=conn_of(bucket)
    )
    done = sensor.poke({})
    assert done.is_done and done.xcom_value == export_uri

    home = hosts.use("publish")
    run = load_run(uri)
    verification, published = publish_run(run, done.xcom_value)
    assert published.status == "published" and verification.signatures == 2
    assert verification.content_digest == exported["content_digest"]  # the bytes export pushed
    assert run.local_export_dir.is_relative_to(home)

    work = BucketURI(record.work_dir)
    stored = keys(work)
    assert {
        "run.json",
        "config.yaml",
        "checkpoint/model.ckpt.index",
        "checkpoint/eval_sample.json",
        "train.json",
        "validation.json",
        "reference_outputs.json",
        "export.json",
        f"export/{VERSION}.source.json",
        f"export/{VERSION}/saved_model.pb",
        f"export/{VERSION}/variables/variables.index",
    } <= stored, sorted(stored)
    assert json.loads(objects.read_bytes(work / "run.json"))["work_dir"] == record.work_dir
    assert not [key for key in stored if ".tmp" in key or key.startswith(".")], sorted(stored)
    entry = read_manifest(Path(published.path).parent)["versions"][VERSION]
    assert entry["config"]["sha256"] == record.config_sha256


def test_a_step_whose_predecessor_did_not_commit_names_it(pipeline_file, bucket, hosts):
    """No train.json: validate and export name train; no validation.json: publish names validate."""
    hosts.use("train")
    record = begin(pipeline_file, bucket)
    uri = str(record.path)
    hosts.use("validate")
    with pytest.raises(RunRecordError, match=rf"has no train\.json in {bucket}/.* task 'train'") as info:
        validate_run(load_run(uri))
    assert info.value.permanent
    hosts.use("export")
    with pytest.raises(RunRecordError, match=r"has no train\.json .* task 'train'"):
        export_run(load_run(uri))
    hosts.use("train-2")
    train_run(load_run(uri))
    hosts.use("publish")
    with pytest.raises(RunRecordError, match=r"has no validation\.json .* task 'validate_signatures'"):
        publish_run(load_run(uri), str(record.export_dir))


def test_no_record_in_the_bucket_says_train_must_run(bucket, hosts):
    hosts.use("validate")
    with pytest.raises(RunRecordError, match=r"run\.json: it does not exist; task 'train'"):
        load_run(f"{bucket}/exports/digits/runs/nothing/run.json")


def _fail_on_call(mp: pytest.MonkeyPatch, n: int) -> list[str]:
    """Makes objects.upload_file fail on its n-th call (a task killed mid-push); returns the keys sent."""
    real, sent = objects.upload_file, []

    def upload(local, uri):
        if len(sent) + 1 == n:
            raise StorageError(f"killed before uploading {uri}")
        sent.append(uri)
        return real(local, uri)

    mp.setattr(objects, "upload_file", upload)
    return sent


def test_a_train_killed_during_its_push_leaves_no_train_json_and_the_retry_succeeds(
    pipeline_file, bucket, hosts
):
    """Killed after 2 checkpoint files: no train.json; the retry (another host) commits; a later
    attempt killed mid-push un-commits first, so train.json never stands over half-sent files."""
    hosts.use("train-1")
    record = begin(pipeline_file, bucket)
    work, uri = BucketURI(record.work_dir), str(record.path)
    with pytest.MonkeyPatch.context() as mp:
        sent = _fail_on_call(mp, 3)
        with pytest.raises(StorageError, match="killed before uploading"):
            train_run(record)
    assert len(sent) == 2 and all(str(s).startswith(f"{work}/checkpoint/") for s in sent)
    assert "train.json" not in keys(work)

    hosts.use("train-2")  # the retry: start_run finds the record, trains again, pushes it all
    retry = begin(pipeline_file, bucket)
    assert retry == record
    train_run(retry)
    assert "train.json" in keys(work)

    hosts.use("train-3")  # one more attempt, killed mid-push: the committed train.json goes first
    with pytest.MonkeyPatch.context() as mp:
        _fail_on_call(mp, 2)
        with pytest.raises(StorageError, match="killed before uploading"):
            train_run(load_run(uri))
    assert "train.json" not in keys(work)

    hosts.use("train-4")
    train_run(load_run(uri))
    hosts.use("validate")
    assert validate_run(load_run(uri))["verdict"] == "passed"


@pytest.fixture
def bucket_export(exported, bucket) -> BucketURI:
    """The session's export uploaded under a version prefix in the bucket."""
    prefix = BucketURI(bucket) / "exports" / VERSION
    objects.upload_tree(exported, prefix, last=["saved_model.pb"])
    return prefix


def _poke(prefix: BucketURI, bucket: str) -> bool:
    sensor = SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=str(prefix), conn_id=conn_of(bucket)
    )
    return sensor.poke({}).is_done


@pytest.mark.parametrize(
    "damage",
    ["none", "saved_model.pb", "variables/", "variables/variables.index", "shard", "all"],
)
def test_the_sensor_judges_a_bucket_export_by_its_listing(bucket_export, bucket, damage):
    """Complete: done. Without saved_model.pb, variables/, the index, a shard, or anything: not done."""
    if damage == "shard":
        shard = next(s.uri for s in objects.listing(bucket_export) if "variables.data-" in s.uri)
        objects.delete(shard)
    elif damage == "all":
        objects.delete_tree(bucket_export)
    elif damage.endswith("/"):
        objects.delete_tree(bucket_export / damage)
    elif damage != "none":
        objects.delete(bucket_export / damage)
    assert _poke(bucket_export, bucket) is (damage == "none")


def test_the_trigger_fires_once_saved_model_pb_lands_in_the_bucket(bucket_export, bucket, exported):
    """In the triggerer (binding its own connection, in a worker thread): waits for saved_model.pb, fires."""
    objects.delete(bucket_export / "saved_model.pb")
    _, kwargs = SavedModelVersionTrigger(str(bucket_export), 0.05, conn_of(bucket)).serialize()
    assert kwargs["conn_id"] == conn_of(bucket)

    async def scenario():
        events = SavedModelVersionTrigger(**kwargs).run()
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.5)
        assert not first.done()
        await asyncio.to_thread(
            objects.upload_file, exported / "saved_model.pb", bucket_export / "saved_model.pb"
        )
        return await asyncio.wait_for(first, timeout=20)

    event = asyncio.run(scenario())
    assert event.payload == {"status": "complete", "version_dir": str(bucket_export)}


def test_preflight_probes_a_bucket_and_leaves_nothing(bucket, tmp_path):
    report = preflight_storage(tmp_path / "serving", f"{bucket}/exports", "digits")
    assert report.runs_dir == f"{bucket}/exports/digits/runs"
    assert objects.listing(BucketURI(bucket)) == []


def test_preflight_names_the_bucket_and_connection_it_cannot_write(bucket, tmp_path):
    missing = f"{bucket.split('://')[0]}://no-such-bucket-{bucket[-8:]}"
    use_connection(missing, conn_of(bucket))
    with pytest.raises(
        PreflightError, match=rf"bucket {missing} with Airflow connection '{conn_of(bucket)}'"
    ):
        preflight_storage(tmp_path / "serving", f"{missing}/exports", "digits")
