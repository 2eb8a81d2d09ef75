"""Training: accuracy of the example, reproducibility, the shipped and user-supplied builders."""

from __future__ import annotations

import json
from pathlib import Path

from include.config import ModelConfig
from include.export import checkpoint_digest
from include.training import METRICS_FILE, train_model
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
