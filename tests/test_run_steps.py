"""The run record and the steps on it: one config per run, and only a verified export is published."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from include.errors import ConfigError, ExportVerificationError, IncompleteModelError, RunRecordError
from include.registry.store import read_manifest
from include.run.record import RunIdentity, RunRecord, load_run, start_run
from include.run.steps import export_run, publish_run, validate_run
from include.versions import runs_dir
from tests.helpers import make_raw, write_pipeline

LOGICAL_DATE = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)


def begin(pipeline_file: Path, run_id: str = "manual__2026-10-20", **params) -> RunRecord:
    """Starts a run of the pipeline (as its train task does) with its work dir under the pipeline's roots."""
    runs = runs_dir(pipeline_file.parent.parent / "exports", "digits")
    run = RunIdentity("digits_softmax", run_id, "manual", LOGICAL_DATE.isoformat())
    return start_run(pipeline_file, runs, run, params, LOGICAL_DATE, LOGICAL_DATE)


@pytest.fixture
def pipeline_file(tmp_path, example_data) -> Path:
    """A pipeline YAML of the example, with its own export and serving roots under tmp_path."""
    return write_pipeline(tmp_path / "pipelines", make_raw(tmp_path, example_data))


def edit_yaml(path: Path, **quality) -> None:
    """Rewrites a pipeline YAML with other quality-gate values (what a colleague's edit does)."""
    raw = yaml.safe_load(path.read_text())
    raw["quality"].update(quality)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture
def run(pipeline_file, trained):
    """A started run whose train step reused the session's trained checkpoint."""
    record = begin(pipeline_file)
    record.write_step("train", trained.to_dict())
    return record


def serving_tree(record) -> list[str]:
    """Returns every path under the run's serving root (to prove nothing was published)."""
    root = record.config.storage.serving_root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_start_run_snapshots_the_yaml_byte_for_byte(pipeline_file):
    """The record holds a copy of the YAML, its SHA-256, the version and the options."""
    record = begin(pipeline_file, steps=5)
    assert record.config_snapshot.read_bytes() == pipeline_file.read_bytes()
    assert record.config_sha256 == hashlib.sha256(pipeline_file.read_bytes()).hexdigest()
    stored = json.loads(record.path.read_text())
    assert stored["options"]["version"] == 20261020000000 and stored["options"]["steps"] == 5
    assert load_run(record.path) == record


def test_yaml_edited_after_the_start_does_not_reach_the_run(pipeline_file):
    """Later steps read the snapshot: an edit of the YAML mid-run changes nothing for this run."""
    record = begin(pipeline_file)
    edit_yaml(pipeline_file, min_accuracy=0.999)
    assert load_run(record.path).config.quality.min_accuracy == 0.9
    next_run = begin(pipeline_file, "manual__next")
    assert next_run.config.quality.min_accuracy == 0.999


def test_retried_first_task_keeps_the_record_it_started_with(pipeline_file):
    """A second start of the same run (a retry) finds the record and keeps its config and options."""
    first = begin(pipeline_file, steps=5)
    edit_yaml(pipeline_file, min_accuracy=0.5)
    retry = begin(pipeline_file, steps=7)
    assert retry == first and retry.config.quality.min_accuracy == 0.9


def test_retry_survives_a_yaml_broken_since_the_start(pipeline_file):
    """A retry reads its record before the YAML, so a file broken mid-run does not fail the run."""
    first = begin(pipeline_file)
    pipeline_file.write_text("name: [unclosed\n")
    assert begin(pipeline_file) == first
    with pytest.raises(ConfigError, match="not valid YAML"):
        begin(pipeline_file, "manual__next")


def test_changed_snapshot_is_refused(pipeline_file):
    """A snapshot that no longer hashes to the recorded digest fails loading the record."""
    record = begin(pipeline_file)
    record.config_snapshot.write_text(record.config_snapshot.read_text() + "\n# edited\n")
    with pytest.raises(RunRecordError, match="was changed after the run started"):
        load_run(record.path)


def test_missing_record_names_the_file(tmp_path):
    """A record path that holds nothing is a permanent error naming the path and the task that writes it."""
    with pytest.raises(RunRecordError, match=str(tmp_path / "run.json")) as info:
        load_run(tmp_path / "run.json")
    assert "does not exist" in str(info.value) and "task 'train'" in str(info.value)
    assert info.value.permanent


@pytest.mark.parametrize("handed", [None, "", "None"])
def test_no_record_handed_on_says_train_must_run_first(handed):
    """A task run without its upstream's XCom (None) is a permanent RunRecordError, not a TypeError."""
    with pytest.raises(RunRecordError, match="no run record was handed to this task: task 'train'") as info:
        load_run(handed)
    assert info.value.permanent


@pytest.mark.parametrize(
    ("step", "writer"),
    [("train", "train"), ("validation", "validate_signatures"), ("export", "export_savedmodel")],
)
def test_a_missing_step_file_names_the_task_that_writes_it(pipeline_file, step, writer):
    """A step file an earlier task did not write is a permanent error naming the file and that task."""
    record = begin(pipeline_file)
    with pytest.raises(RunRecordError, match=f"has no {step}.json in .*task '{writer}'") as info:
        record.read_step(step)
    assert info.value.permanent


def test_later_tasks_without_their_upstream_record_fail_without_retry():
    """validate_signatures and export_savedmodel run alone (`airflow tasks test`): AirflowFailException."""
    from airflow.sdk.exceptions import AirflowFailException

    from plugins.savedmodel_operators import SavedModelExportOperator
    from plugins.savedmodel_tasks import validate_signatures

    with pytest.raises(AirflowFailException, match="task 'train' of the same run writes it"):
        validate_signatures.function(None)
    operator = SavedModelExportOperator(task_id="export_savedmodel", run_record=None)
    with pytest.raises(AirflowFailException, match="task 'train' of the same run writes it"):
        operator.execute({})


def test_validate_without_the_train_step_fails_without_retry(pipeline_file):
    """A record whose train step never ran: validate_signatures fails at once, naming train.json and train."""
    from airflow.sdk.exceptions import AirflowFailException

    from plugins.savedmodel_tasks import validate_signatures

    record = begin(pipeline_file)
    with pytest.raises(AirflowFailException, match=r"has no train\.json .* task 'train'"):
        validate_signatures.function(str(record.path))


def test_verified_export_is_published_with_config_digest_and_verification(run):
    """A good export loads, answers like the trained model, and its manifest entry names its config."""
    validate_run(run)
    export = export_run(run)
    verification, result = publish_run(run, export["export_dir"])
    assert verification.pid == os.getpid()
    entry = read_manifest(Path(result.path).parent)["versions"][str(run.version)]
    assert entry["config"]["sha256"] == run.config_sha256
    assert Path(entry["config"]["snapshot"]).read_bytes() == run.config_snapshot.read_bytes()
    assert entry["verification"]["signatures"] == 2 and entry["verification"]["warmup_records"] == 2
    assert entry["verification"]["rows"] == 32


def tamper_weights(export_dir: Path) -> None:
    """Rewrites the export's variables with every weight scaled: a valid shard, wrong outputs."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        v1.saved_model.loader.load(sess, ["serve"], str(export_dir))
        variables = v1.global_variables()
        sess.run([v.assign(v * 1.5 + 0.01) for v in variables])
        v1.train.Saver(variables).save(
            sess, str(export_dir / "variables" / "variables"), write_meta_graph=False
        )
    (export_dir / "variables" / "checkpoint").unlink(missing_ok=True)


def test_export_with_wrong_outputs_is_refused_before_publish(run):
    """An export whose variables were rewritten (still loadable) fails verification; nothing is published."""
    validate_run(run)
    export_dir = Path(export_run(run)["export_dir"])
    tamper_weights(export_dir)
    with pytest.raises(ExportVerificationError, match="differs from the trained model by up to"):
        publish_run(run, export_dir)
    assert serving_tree(run) == []


def test_export_that_does_not_load_is_refused_before_publish(run):
    """A variables shard with flipped bytes (checksum mismatch) fails with 'does not load'."""
    validate_run(run)
    export_dir = Path(export_run(run)["export_dir"])
    shard = next((export_dir / "variables").glob("variables.data-*"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ExportVerificationError, match="does not load"):
        publish_run(run, export_dir)
    assert serving_tree(run) == []


def test_reference_outputs_cover_every_signature_on_the_held_out_rows(run):
    """validate_run records each signature's outputs on the 32 held-out rows for the export check."""
    validate_run(run)
    reference = run.read_step("reference_outputs")
    assert set(reference) == {"predict_images", "serving_default"}
    assert np.shape(reference["predict_images"]["scores"]) == (32, 10)
    assert np.shape(reference["serving_default"]["classes"]) == (32, 10)


def test_export_changed_after_verification_is_not_published(run):
    """publish_version refuses content other than the digest that verification loaded."""
    from include.registry.publish import publish_version

    validate_run(run)
    export_dir = Path(export_run(run)["export_dir"])
    with pytest.raises(IncompleteModelError, match="is not the verified"):
        publish_version(
            export_dir, run.config.storage.serving_root, "digits", run.version, expected_digest="0" * 64
        )
    assert serving_tree(run) == []
