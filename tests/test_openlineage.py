"""OpenLineage: off without a transport, datasets named as OpenLineage names them, never a task's failure.

The end-to-end run with the provider's file transport is tests/e2e/test_openlineage.py.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest

from include import lineage
from include.run.options import RunOptions
from include.run.record import CONFIG_SNAPSHOT, RunIdentity, RunRecord
from plugins.savedmodel_lineage import LineageMixin, enabled, keep
from tests.helpers import example_raw, write_pipeline

TRANSPORT = "AIRFLOW__OPENLINEAGE__TRANSPORT"
DATA = {
    "partitions": ["dt=2026-10-01", "dt=2026-10-02"],
    "fingerprint": "ab" * 32,
    "partition_fingerprints": {"dt=2026-10-01": "cd" * 32, "dt=2026-10-02": "ef" * 32},
    "files": 2,
    "records": 9,
}


class Task(LineageMixin):
    """An operator as far as lineage goes."""

    task_id = "train"


@pytest.fixture
def no_openlineage(monkeypatch):
    """No OpenLineage setting at all, as the project runs by default."""
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__OPENLINEAGE__", "OPENLINEAGE")):
            monkeypatch.delenv(name)


@pytest.fixture
def file_transport(monkeypatch, tmp_path):
    """OpenLineage on, writing events to a file."""
    monkeypatch.setenv(TRANSPORT, f'{{"type": "file", "log_file_path": "{tmp_path}/events.jsonl"}}')


def test_without_a_transport_nothing_is_kept_or_reported(no_openlineage):
    """No transport: the provider registers no listener and a task keeps nothing to report."""
    from airflow.providers.openlineage.plugins.openlineage import OpenLineageProviderPlugin

    assert OpenLineageProviderPlugin.listeners == [] and not enabled()
    task = Task()
    keep({"task": task}, "train", None, None)  # never even builds the datasets
    assert task.kept_lineage is None and task.get_openlineage_facets_on_complete(None) is None


def test_a_task_reports_the_datasets_it_kept(file_transport, monkeypatch):
    """With a transport, what a step's builder returns is what the operator answers on completion."""
    monkeypatch.setitem(lineage.STEPS, "train", lambda *_: ([lineage.dir_input("/d")], []))
    task = Task()
    keep({"task": task}, "train")
    reported = task.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in reported.inputs] == [("file", "/d")] and reported.outputs == []


def test_a_failing_description_is_logged_and_the_task_goes_on(file_transport, monkeypatch, caplog):
    """A builder that raises leaves the task without datasets and says so in its log."""
    monkeypatch.setitem(lineage.STEPS, "train", lambda *_: 1 / 0)
    task = Task()
    keep({"task": task}, "train")
    assert task.kept_lineage is None and "could not describe what train read and wrote" in caplog.text


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/digits/dt=2026-10-01", ("file", "/data/digits/dt=2026-10-01")),
        ("gs://acme-ml/data/dt=2026-10-01", ("gs://acme-ml", "data/dt=2026-10-01")),
        ("s3://acme-ml/models/digits/7", ("s3://acme-ml", "models/digits/7")),
    ],
)
def test_datasets_are_named_by_openlineage_naming(location, expected):
    """A local path is namespace `file` and its absolute path; a bucket URI its bucket and key."""
    assert lineage.dataset_name(location) == expected


def test_partitions_carry_the_window_fingerprint_and_their_counts():
    """One input per partition with the window's fingerprint; its examples where statistics were taken."""
    statistics = {"by_partition": {"dt=2026-10-01": {"examples": 4, "held_out": 1}}}
    first, second = lineage.partition_inputs("gs://acme-ml/data", DATA, statistics)
    assert (first.namespace, first.name) == ("gs://acme-ml", "data/dt=2026-10-01")
    facet = first.inputFacets["savedmodel_partition"]
    assert (facet.windowFingerprint, facet.examples, facet.heldOut) == (DATA["fingerprint"], 4, 1)
    assert facet.fingerprint == "cd" * 32  # the partition's own
    assert second.inputFacets["savedmodel_partition"].fingerprint == "ef" * 32
    assert first.inputFacets["inputStatistics"].rowCount == 4
    assert second.inputFacets["savedmodel_partition"].examples is None
    assert "inputStatistics" not in second.inputFacets  # statistics off for it: no row count claimed


def test_a_run_in_a_bucket_names_everything_by_bucket_and_key(tmp_path):
    """With data and work dir in a bucket, train's partitions and checkpoint, and export's output,
    are named by the bucket's URI, not by the task's local copy."""
    raw = example_raw()
    raw["data"]["location"] = "gs://acme-ml/data/digits"
    raw["storage"] = {"export_root": "gs://acme-ml/exports", "serving_root": "gs://acme-ml/models"}
    write_pipeline(tmp_path, raw, CONFIG_SNAPSHOT)
    record = RunRecord(
        run=RunIdentity("digits_softmax", "manual__1", "manual", None),
        pipeline="digits_softmax",
        config_source="digits_softmax.yaml",
        config_sha256="0" * 64,
        options=RunOptions(version=7, as_of=dt.date(2026, 10, 12)),
        work_dir="gs://acme-ml/exports/digits/runs/manual__1",
        local_dir=str(tmp_path),
    )
    inputs, (checkpoint,) = lineage.train_lineage(record, {"data": {**DATA, "records": None}})
    assert [(d.namespace, d.name) for d in inputs] == [
        ("gs://acme-ml", "data/digits/dt=2026-10-01"),
        ("gs://acme-ml", "data/digits/dt=2026-10-02"),
    ]
    run_key = "exports/digits/runs/manual__1"
    assert (checkpoint.namespace, checkpoint.name) == ("gs://acme-ml", f"{run_key}/checkpoint")
    _, (export,) = lineage.export_lineage(record, {"export_dir": str(record.export_dir)})
    assert export.name == f"{run_key}/export/7"
