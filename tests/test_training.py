"""Training: accuracy of the example, reproducibility, the shipped and user-supplied builders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from include.config import ModelConfig
from include.savedmodel.export import checkpoint_digest
from include.summary import metrics_headline
from include.train.training import EVAL_SAMPLE_SIZE, METRICS_FILE, train_model
from tests.helpers import AFTER_ALL_DATA


def custom_builder(x, num_classes: int, model: ModelConfig):
    """A user's own graph builder, referenced from YAML as tests.test_training:custom_builder."""
    import tensorflow as tf

    w = tf.compat.v1.get_variable("w", [int(x.shape[-1]), num_classes])
    return tf.matmul(x, w)


def test_example_reaches_the_required_accuracy(trained):
    """The tutorial model on the digits reaches >= 0.95 held-out accuracy."""
    assert trained.metrics["eval_accuracy"] >= 0.95
    assert trained.metrics["eval_examples"] > 300
    assert trained.data["train_examples"] + trained.data["eval_examples"] == 1797


def test_checkpoint_and_metrics_are_written(trained):
    """The checkpoint dir holds the checkpoint files and the metrics, and no temporary dirs."""
    checkpoint_dir = Path(trained.checkpoint).parent
    assert json.loads((checkpoint_dir / METRICS_FILE).read_text()) == trained.metrics
    assert list(checkpoint_dir.parent.glob(".checkpoint-tmp-*")) == []


def test_training_is_reproducible(session_config, trained, tmp_path):
    """The same config, date and seed give a byte-identical checkpoint."""
    again = train_model(session_config, AFTER_ALL_DATA, tmp_path)
    assert checkpoint_digest(again.checkpoint) == checkpoint_digest(trained.checkpoint)
    assert again.metrics["eval_accuracy"] == trained.metrics["eval_accuracy"]


def test_overrides_change_the_run(session_config, tmp_path):
    """A steps / learning-rate override is what the run uses and records."""
    result = train_model(session_config, AFTER_ALL_DATA, tmp_path, steps=5, learning_rate=0.01)
    assert result.hyperparameters["steps"] == 5 and result.hyperparameters["learning_rate"] == 0.01
    assert result.metrics["eval_accuracy"] < 0.95


def test_mlp_builder_trains(session_config, tmp_path):
    """The shipped MLP builder trains with Adam to a high accuracy too."""
    config = session_config.model_copy(
        update={
            "model": session_config.model.model_copy(update={"builder": "mlp", "hidden_units": (32,)}),
            "training": session_config.training.model_copy(
                update={"optimizer": "adam", "learning_rate": 0.01, "steps": 600}
            ),
        }
    )
    assert train_model(config, AFTER_ALL_DATA, tmp_path).metrics["eval_accuracy"] >= 0.95


def test_user_builder_from_module_path(session_config, tmp_path):
    """model.builder 'package.module:function' imports and uses the user's function."""
    config = session_config.model_copy(
        update={
            "model": session_config.model.model_copy(
                update={"builder": "tests.test_training:custom_builder"}
            ),
            "training": session_config.training.model_copy(update={"steps": 50}),
        }
    )
    result = train_model(config, AFTER_ALL_DATA, tmp_path)
    assert 0 < result.metrics["eval_accuracy"] <= 1


def test_a_killed_attempts_checkpoint_temp_dir_is_removed(session_config, tmp_path):
    """A retry removes the half-written checkpoint dir an attempt in another process left behind."""
    stale = tmp_path / ".checkpoint-tmp-999999"
    (stale / "junk").mkdir(parents=True)
    train_model(session_config, AFTER_ALL_DATA, tmp_path, steps=5)
    assert not stale.exists() and list(tmp_path.glob(".checkpoint-tmp-*")) == []


def test_the_data_summary_describes_the_window_read(session_config, trained):
    """The result's `data` names the partitions, files, bytes, records, skipped entries and fingerprint."""
    from include.summary import data_read
    from include.train.window import data_window

    window = data_window(session_config.data, AFTER_ALL_DATA)
    data = trained.data
    assert data["fingerprint"] == window.fingerprint and len(data["fingerprint"]) == 64
    assert data["files"] == 30 and data["bytes"] == window.bytes and data["records"] == 1797
    assert data["skipped"] == [] and data["first_partition"] == "dt=2026-10-01"
    assert data["train_examples"] + data["eval_examples"] == data["records"]
    assert data["eval_examples"] == trained.metrics["eval_examples"]
    assert data["compressed_files"] == {} and data_read(data) == "30 files, 1,797 records"


def test_metrics_name_the_train_run(trained):
    """The metrics hold the held-out accuracy and loss and the train loss, steps and examples seen."""
    metrics = trained.metrics
    assert metrics["train_steps"] == 2000 and metrics["train_examples_seen"] == 2000 * 50
    assert metrics["train_loss"] > 0 and 0 < metrics["train_accuracy"] <= 1
    assert metrics["examples_per_second"] > 0 and metrics["eval_loss"] > 0


def test_eval_sample_holds_held_out_examples(session_config, trained):
    """eval_sample.json beside the checkpoint holds 32 serialized held-out tf.Examples (label and id kept)."""
    from include.train.data import held_out
    from tests.helpers import eval_sample, example_values

    sample = eval_sample(trained.checkpoint)
    assert len(sample) == EVAL_SAMPLE_SIZE
    values = [example_values(example) for example in sample]
    assert all(len(v["x"]) == 64 and 0 <= v["label"][0] < 10 for v in values)
    ids = [v["id"][0] for v in values]
    assert held_out(np.array(ids), session_config.data.eval_percent).numpy().all()
    assert len(set(ids)) == len(ids)


def test_metrics_headline_names_each_heads_metrics():
    """The train task's summary line shows accuracy and loss, or (regression) MSE and MAE."""
    assert (
        metrics_headline({"eval_accuracy": 0.96, "eval_loss": 0.12})
        == "held-out accuracy 0.9600, loss 0.1200"
    )
    assert metrics_headline({"eval_loss": 2.5, "eval_mae": 1.25}) == "held-out loss (MSE) 2.5000, MAE 1.2500"
