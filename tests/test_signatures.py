"""Signature validation: contract comparison with readable diffs, smoke runs, quality gate."""

from __future__ import annotations

import numpy as np
import pytest

from include.config import SignatureSpec, TensorSpec
from include.errors import ContractMismatchError, QualityGateError
from include.validate.checkpoint import validate_checkpoint
from include.validate.signatures import compatibility_diff, describe_signatures


def with_signatures(config, **changes):
    return config.model_copy(update={"signatures": {**config.signatures, **changes}})


def test_example_checkpoint_passes(session_config, trained):
    """The example's signatures match its contract and answer smoke requests."""
    verdict = validate_checkpoint(session_config, trained.checkpoint, trained.metrics)
    assert verdict["verdict"] == "passed"
    assert verdict["signatures"]["serving_default"]["method"] == "tensorflow/serving/classify"
    assert verdict["signatures"]["predict_images"]["inputs"]["images"] == {
        "dtype": "float32",
        "shape": [-1, 64],
    }
    assert len(verdict["signature_fingerprint"]) == 64


def test_fingerprint_is_stable(session_config, trained):
    """Validating twice gives the same signature fingerprint."""
    first = validate_checkpoint(session_config, trained.checkpoint, trained.metrics)
    second = validate_checkpoint(session_config, trained.checkpoint, trained.metrics)
    assert first["signature_fingerprint"] == second["signature_fingerprint"]


def test_signatures_are_built_from_the_yaml(session_config, trained):
    """The example YAML yields exactly the tutorial's two signatures, over the tensors it names."""
    verdict = validate_checkpoint(session_config, trained.checkpoint, trained.metrics)
    assert verdict["signatures"] == {
        "predict_images": {
            "method": "tensorflow/serving/predict",
            "inputs": {"images": {"dtype": "float32", "shape": [-1, 64]}},
            "outputs": {"scores": {"dtype": "float32", "shape": [-1, 10]}},
        },
        "serving_default": {
            "method": "tensorflow/serving/classify",
            "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
            "outputs": {
                "classes": {"dtype": "string", "shape": [-1, 10]},
                "scores": {"dtype": "float32", "shape": [-1, 10]},
            },
        },
    }


def test_a_new_signature_in_the_yaml_is_exported(session_config, trained):
    """A signature added in the YAML (logits over tf.Examples) appears in the model and answers."""
    config = with_signatures(
        session_config,
        logits_from_examples=SignatureSpec(
            method="predict",
            inputs={"examples": TensorSpec(dtype="string", shape=(-1,))},
            outputs={"logits": TensorSpec(dtype="float32", shape=(-1, 10))},
        ),
    )
    verdict = validate_checkpoint(config, trained.checkpoint, trained.metrics)
    assert verdict["signatures"]["logits_from_examples"]["outputs"]["logits"]["shape"] == [-1, 10]
    logits = np.array(verdict["reference_outputs"]["logits_from_examples"]["logits"])
    scores = np.array(verdict["reference_outputs"]["predict_images"]["scores"])
    np.testing.assert_array_equal(logits.argmax(axis=1), scores.argmax(axis=1))


def test_contract_mismatch_lists_every_difference(session_config, trained):
    """A declared dtype or shape the model's tensor does not have is one diff line each."""
    config = with_signatures(
        session_config,
        predict_images=SignatureSpec(
            method="predict",
            inputs={"images": TensorSpec(dtype="float64", shape=(-1, 64), tensor="features.x")},
            outputs={"scores": TensorSpec(dtype="float32", shape=(-1, 12), tensor="scores")},
        ),
    )
    with pytest.raises(ContractMismatchError) as info:
        validate_checkpoint(config, trained.checkpoint, trained.metrics)
    assert info.value.diff == [
        "signature 'predict_images' input 'images': dtype expected float64, got float32",
        "signature 'predict_images' output 'scores': shape expected [-1, 12], got [-1, 10]",
    ]


def test_described_signatures_are_sorted_plain_data(exported):
    """describe_signatures turns a loaded SavedModel's SignatureDefs into the manifest's plain form."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        meta_graph = v1.saved_model.loader.load(sess, ["serve"], str(exported))
    described = describe_signatures(dict(meta_graph.signature_def))
    assert list(described) == ["predict_images", "serving_default"]
    assert described["predict_images"]["inputs"]["images"] == {"dtype": "float32", "shape": [-1, 64]}


def test_quality_gate_names_metric_value_and_bound(session_config, trained):
    """A model below min_accuracy fails with the metric, its value and the bound."""
    config = session_config.model_copy(
        update={"quality": session_config.quality.model_copy(update={"min_accuracy": 0.999})}
    )
    with pytest.raises(QualityGateError, match=r"eval_accuracy=0\.9\d+, expected >= 0\.999"):
        validate_checkpoint(config, trained.checkpoint, trained.metrics)


# --- against the served version: signature compatibility and no regression ---------------


def served_entry(trained, session_config, **changes) -> dict:
    """Returns a manifest entry like the one of a served version of this model."""
    signatures = validate_checkpoint(session_config, trained.checkpoint, trained.metrics)["signatures"]
    return {"version": 20261001000000, "signatures": signatures, "metrics": dict(trained.metrics), **changes}


def test_compatible_with_the_same_signatures(session_config, trained):
    """A candidate with the served version's signatures passes the compatibility check."""
    baseline = served_entry(trained, session_config)
    verdict = validate_checkpoint(session_config, trained.checkpoint, trained.metrics, baseline=baseline)
    assert verdict["verdict"] == "passed" and verdict["baseline_version"] == 20261001000000


def test_compatibility_diff_names_breaking_changes():
    """Removed signatures/outputs and changed dtypes break clients; added outputs do not."""
    served = {
        "a": {
            "method": "m",
            "inputs": {"x": {"dtype": "float32", "shape": [-1, 4]}},
            "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
        },
        "gone": {"method": "m", "inputs": {}, "outputs": {}},
    }
    candidate = {
        "a": {
            "method": "m",
            "inputs": {"x": {"dtype": "float64", "shape": [-1, 4]}, "z": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"extra": {"dtype": "float32", "shape": [-1]}},
        },
    }
    assert set(compatibility_diff(served, candidate)) == {
        "signature 'gone' removed",
        "signature 'a': new input 'z' that clients do not send",
        "signature 'a': output 'y' removed",
        "signature 'a': input 'x' dtype changed from float32 to float64",
    }


def test_breaking_change_fails_unless_allowed(session_config, trained):
    """A served version with another output shape makes validation fail with the diff, unless allowed."""
    baseline = served_entry(trained, session_config)
    baseline["signatures"]["predict_images"]["outputs"]["scores"]["shape"] = [-1, 12]
    with pytest.raises(
        ContractMismatchError, match=r"output 'scores' shape changed from \[-1, 12\] to \[-1, 10\]"
    ):
        validate_checkpoint(session_config, trained.checkpoint, trained.metrics, baseline=baseline)
    verdict = validate_checkpoint(
        session_config, trained.checkpoint, trained.metrics, baseline=baseline, allow_breaking_change=True
    )
    assert verdict["verdict"] == "passed"


def test_regression_against_the_served_version_fails(session_config, trained):
    """Accuracy more than max_accuracy_drop below the served version's fails, naming both."""
    better = served_entry(trained, session_config, metrics={"eval_accuracy": 0.999})
    with pytest.raises(
        QualityGateError, match=r"version 20261001000000 has 0\.999000, max_accuracy_drop 0\.02"
    ):
        validate_checkpoint(session_config, trained.checkpoint, trained.metrics, baseline=better)


def test_force_reason_overrides_the_gate_only(session_config, trained):
    """force_publish with a reason turns a failed gate into verdict 'forced'."""
    better = served_entry(trained, session_config, metrics={"eval_accuracy": 0.999})
    verdict = validate_checkpoint(
        session_config, trained.checkpoint, trained.metrics, baseline=better, force_reason="known data shift"
    )
    assert verdict["verdict"] == "forced"


def test_first_publish_has_no_baseline(session_config, trained):
    """Without a served version only the absolute thresholds apply."""
    verdict = validate_checkpoint(session_config, trained.checkpoint, trained.metrics, baseline=None)
    assert verdict["verdict"] == "passed" and verdict["baseline_version"] is None


def test_loss_rising_past_max_loss_increase_fails(session_config, trained):
    """A held-out loss more than quality.max_loss_increase above the served version's fails, naming both."""
    config = session_config.model_copy(
        update={"quality": session_config.quality.model_copy(update={"max_loss_increase": 0.1})}
    )
    loss = trained.metrics["eval_loss"]
    close = served_entry(trained, session_config, metrics={**trained.metrics, "eval_loss": loss / 1.05})
    assert (
        validate_checkpoint(config, trained.checkpoint, trained.metrics, baseline=close)["verdict"]
        == "passed"
    )
    better = served_entry(trained, session_config, metrics={**trained.metrics, "eval_loss": loss / 2})
    with pytest.raises(
        QualityGateError, match=r"eval_loss=.*version 20261001000000 has .*max_loss_increase 0\.1"
    ):
        validate_checkpoint(config, trained.checkpoint, trained.metrics, baseline=better)
