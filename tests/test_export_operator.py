"""SavedModelExportOperator: a real export TF's tools can read, reruns that reuse or repair."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from airflow.sdk.exceptions import AirflowFailException

import include.savedmodel.export
from include.run.record import RunIdentity, RunRecord, start_run
from include.savedmodel.files import content_digest
from include.train.features import request_examples
from include.train.model import build_serving_graph
from include.versions import runs_dir
from plugins.savedmodel_operators import SavedModelExportOperator
from tests.helpers import (
    assert_complete,
    checkpoint_scores,
    eval_sample,
    make_raw,
    score_in_fresh_process,
    write_pipeline,
)


@pytest.fixture
def start(tmp_path, example_data, trained):
    """Returns a factory of runs (own roots under tmp_path) whose train step is the session's checkpoint."""
    pipeline_file = write_pipeline(tmp_path / "pipelines", make_raw(tmp_path, example_data))

    def factory(run_id: str = "manual__1", checkpoint: str | None = None) -> RunRecord:
        when = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
        run = RunIdentity("digits_softmax", run_id, "manual", None)
        record = start_run(pipeline_file, runs_dir(tmp_path / "exports", "digits"), run, {}, when, when)
        record.write_step("train", {**trained.to_dict(), "checkpoint": checkpoint or trained.checkpoint})
        return record

    return factory


def export_operator(record: RunRecord) -> SavedModelExportOperator:
    return SavedModelExportOperator(task_id="export_savedmodel", run_record=str(record.path))


def test_execute_writes_a_complete_savedmodel(start):
    """execute() exports a complete version dir at the run's export dir and returns its digest and size."""
    record = start()
    result = export_operator(record).execute({})
    assert_complete(record.export_dir)
    assert result["export_dir"] == str(record.export_dir) and not result["reused"]
    assert result["content_digest"] == content_digest(record.export_dir)
    assert list(record.export_dir.parent.glob(".tmp-*")) == []
    assert record.read_step("export") == result


def test_unreadable_run_record_fails_without_retry(tmp_path):
    """A run record path that holds nothing is a permanent failure naming the path."""
    operator = SavedModelExportOperator(task_id="export_savedmodel", run_record=str(tmp_path / "run.json"))
    with pytest.raises(AirflowFailException, match="cannot read the run record"):
        operator.execute({})


def test_rerun_reuses_a_complete_export_of_the_same_checkpoint(start):
    """Rerunning the task does not trip the builder's 'directory exists' check."""
    record = start()
    first = export_operator(record).execute({})
    second = export_operator(record).execute({})
    assert second["reused"] and second["content_digest"] == first["content_digest"]


def test_two_exports_of_one_checkpoint_are_byte_identical(start):
    """Export is deterministic, so republishing a rerun is an idempotent no-op."""
    a = export_operator(start("manual__a")).execute({})
    b = export_operator(start("manual__b")).execute({})
    assert a["export_dir"] != b["export_dir"] and a["content_digest"] == b["content_digest"]


def copy_checkpoint(checkpoint: str, target_dir: Path) -> str:
    """Returns the prefix of a copy of a checkpoint dir (bundle, eval sample, metrics) in `target_dir`."""
    shutil.copytree(Path(checkpoint).parent, target_dir)
    return str(target_dir / Path(checkpoint).name)


def add_training_state(config, checkpoint: str) -> None:
    """Rewrites a checkpoint with the training graph's global step beside the model's weights."""
    import tensorflow as tf

    v1 = tf.compat.v1
    serving = build_serving_graph(config)
    with serving.graph.as_default():
        v1.train.get_or_create_global_step()
        everything = v1.train.Saver()
    with v1.Session(graph=serving.graph) as sess:
        sess.run(v1.global_variables_initializer())
        v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        everything.save(sess, checkpoint, write_meta_graph=False)


def test_exact_checkpoint_is_copied_byte_for_byte_as_the_builder_saves_it(start, monkeypatch):
    """A checkpoint of exactly the serving variables is copied, unrestored, into what the builder saves."""
    import tensorflow as tf

    record = start("manual__copied")
    assert include.savedmodel.export.holds_exactly(
        record.read_step("train")["checkpoint"], build_serving_graph(record.config).model_variables
    )
    with monkeypatch.context() as patch:
        patch.setattr(tf.compat.v1.train.Saver, "restore", lambda *_: pytest.fail("restored the checkpoint"))
        copied = export_operator(record).execute({})
    monkeypatch.setattr(include.savedmodel.export, "holds_exactly", lambda *_: False)
    saved = export_operator(start("manual__saved")).execute({})
    assert_complete(Path(copied["export_dir"]))
    assert copied["content_digest"] == saved["content_digest"]


def test_checkpoint_with_training_state_is_restored_and_saved(start, trained, tmp_path):
    """A checkpoint holding more than the serving variables goes through restore and the builder's save."""
    record = start()
    checkpoint = copy_checkpoint(trained.checkpoint, tmp_path / "with_step")
    add_training_state(record.config, checkpoint)
    model_variables = build_serving_graph(record.config).model_variables
    assert not include.savedmodel.export.holds_exactly(checkpoint, model_variables)
    plain = export_operator(record).execute({})
    restored = export_operator(start("manual__with_step", checkpoint=checkpoint)).execute({})
    assert restored["content_digest"] == plain["content_digest"]


def test_truncated_checkpoint_is_not_copied_and_fails_without_retry(start, trained, tmp_path):
    """A data shard shorter than its index says is left to the restore, which fails it permanently."""
    checkpoint = copy_checkpoint(trained.checkpoint, tmp_path / "truncated")
    shard = Path(f"{checkpoint}.data-00000-of-00001")
    shard.write_bytes(shard.read_bytes()[:-4])
    record = start(checkpoint=checkpoint)
    with pytest.raises(AirflowFailException, match="cannot restore checkpoint"):
        export_operator(record).execute({})
    assert not record.export_dir.exists()


def test_partial_export_is_replaced(start):
    """A version dir left half-written (no saved_model.pb) is cleaned and exported again."""
    record = start()
    (record.export_dir / "variables").mkdir(parents=True)
    (record.export_dir / "variables" / "variables.index").write_bytes(b"junk")
    result = export_operator(record).execute({})
    assert_complete(record.export_dir)
    assert not result["reused"]


@pytest.mark.parametrize("torn", [b"", b'{"checkpoint": "/x", "checkpoi'])
def test_an_export_whose_source_note_was_torn_by_a_kill_is_exported_again(start, torn):
    """A kill while the note of which checkpoint an export came from was written: the rerun does not
    trust the export it cannot trace, exports again and writes a whole note (found by crash trials)."""
    record = start()
    first = export_operator(record).execute({})
    note = include.savedmodel.export.source_file(record.export_dir)
    note.write_bytes(torn)
    again = export_operator(record).execute({})
    assert not again["reused"] and again["content_digest"] == first["content_digest"]
    assert export_operator(record).execute({})["reused"]
    assert not [p.name for p in note.parent.iterdir() if p.name.endswith(".tmp")]


def test_missing_checkpoint_fails_without_retry(start, tmp_path):
    """A checkpoint that does not exist is a permanent failure naming the prefix."""
    record = start(checkpoint=str(tmp_path / "gone" / "model.ckpt"))
    with pytest.raises(AirflowFailException, match="no checkpoint files"):
        export_operator(record).execute({})
    assert not record.export_dir.exists()


def test_saved_model_cli_lists_both_signatures(exported):
    """TensorFlow's own saved_model_cli reads the export and shows both signatures and methods."""
    cli = shutil.which("saved_model_cli", path=os.path.dirname(os.sys.executable))
    out = subprocess.run(
        [cli, "show", "--all", "--dir", str(exported)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout
    assert "signature_def['predict_images']" in out and "signature_def['serving_default']" in out
    assert "Method name is: tensorflow/serving/predict" in out
    assert "Method name is: tensorflow/serving/classify" in out
    assert "inputs['images']" in out and "outputs['classes']" in out


def test_fresh_process_scores_match_the_training_model(session_config, trained, exported, tmp_path):
    """A new process loads the export and classifies tf.Examples with the in-training scores (1e-5)."""
    examples = request_examples(eval_sample(trained.checkpoint), session_config)
    expected = checkpoint_scores(session_config, trained.checkpoint, examples)
    served = score_in_fresh_process(exported, examples, tmp_path)
    np.testing.assert_allclose(served["scores"], expected, atol=1e-5)
    np.testing.assert_allclose(served["top_scores"], -np.sort(-expected, axis=1), atol=1e-5)
    assert [row[0] for row in served["classes"]] == [str(i) for i in expected.argmax(axis=1)]
