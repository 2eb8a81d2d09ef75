"""SavedModelExportOperator: a real export TF's tools can read, reruns that reuse or repair."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.data import serialize_examples
from include.savedmodel_dir import content_digest
from plugins.savedmodel_operators import SavedModelExportOperator
from tests.helpers import assert_complete, checkpoint_scores, score_in_fresh_process


def export_operator(config, checkpoint: str, export_dir: Path) -> SavedModelExportOperator:
    return SavedModelExportOperator(
        task_id="export_savedmodel",
        pipeline_file=str(config.source_path),
        checkpoint=checkpoint,
        export_base=str(export_dir.parent),
        version=export_dir.name,
    )


def test_execute_writes_a_complete_savedmodel(session_config, trained, tmp_path):
    """execute() exports a complete version dir and returns its path, digest and size."""
    target = tmp_path / "export" / "7"
    result = export_operator(session_config, trained.checkpoint, target).execute({})
    assert_complete(target)
    assert result["export_dir"] == str(target) and not result["reused"]
    assert result["content_digest"] == content_digest(target)
    assert list(target.parent.glob(".tmp-*")) == []


@pytest.mark.parametrize("version", ["0", "../7", "-1", "abc"])
def test_bad_version_fails_before_writing(session_config, trained, tmp_path, version):
    """A version that is not a positive int64 fails without retry and creates nothing."""
    operator = SavedModelExportOperator(
        task_id="export_savedmodel",
        pipeline_file=str(session_config.source_path),
        checkpoint=trained.checkpoint,
        export_base=str(tmp_path / "x"),
        version=version,
    )
    with pytest.raises(AirflowFailException, match="version"):
        operator.execute({})
    assert not (tmp_path / "x").exists()


def test_rerun_reuses_a_complete_export_of_the_same_checkpoint(session_config, trained, tmp_path):
    """Rerunning the task does not trip the builder's 'directory exists' check."""
    target = tmp_path / "7"
    first = export_operator(session_config, trained.checkpoint, target).execute({})
    second = export_operator(session_config, trained.checkpoint, target).execute({})
    assert second["reused"] and second["content_digest"] == first["content_digest"]


def test_two_exports_of_one_checkpoint_are_byte_identical(session_config, trained, tmp_path):
    """Export is deterministic, so republishing a rerun is an idempotent no-op."""
    a = export_operator(session_config, trained.checkpoint, tmp_path / "a" / "1").execute({})
    b = export_operator(session_config, trained.checkpoint, tmp_path / "b" / "1").execute({})
    assert a["content_digest"] == b["content_digest"]


def test_partial_export_is_replaced(session_config, trained, tmp_path):
    """A version dir left half-written (no saved_model.pb) is cleaned and exported again."""
    target = tmp_path / "7"
    (target / "variables").mkdir(parents=True)
    (target / "variables" / "variables.index").write_bytes(b"junk")
    result = export_operator(session_config, trained.checkpoint, target).execute({})
    assert_complete(target)
    assert not result["reused"]


def test_missing_checkpoint_fails_without_retry(session_config, tmp_path):
    """A checkpoint that does not exist is a permanent failure naming the prefix."""
    with pytest.raises(AirflowFailException, match="no checkpoint files"):
        export_operator(session_config, str(tmp_path / "model.ckpt"), tmp_path / "out" / "7").execute({})
    assert not (tmp_path / "out" / "7").exists()


def test_templated_fields_are_declared():
    """Paths and the pipeline file are templated, like FileSensor's filepath."""
    assert set(SavedModelExportOperator.template_fields) == {
        "pipeline_file",
        "checkpoint",
        "export_base",
        "version",
    }


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
    x = np.load(Path(trained.checkpoint).parent / "eval_sample.npz")["x"]
    expected = checkpoint_scores(session_config, trained.checkpoint, x)
    served = score_in_fresh_process(exported, serialize_examples(x), tmp_path)
    np.testing.assert_allclose(served["scores"], expected, atol=1e-5)
    np.testing.assert_allclose(served["top_scores"], -np.sort(-expected, axis=1), atol=1e-5)
    assert [row[0] for row in served["classes"]] == [str(i) for i in expected.argmax(axis=1)]
