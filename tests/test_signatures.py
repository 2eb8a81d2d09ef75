"""Signature validation: contract comparison with readable diffs, smoke runs, quality gate."""

from __future__ import annotations

import dataclasses

import pytest

from include.config import SignatureSpec, TensorSpec
from include.errors import ContractMismatchError, QualityGateError
from include.signatures import validate_checkpoint


def with_signatures(config, **changes):
    return dataclasses.replace(config, signatures={**config.signatures, **changes})


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


def test_contract_mismatch_lists_every_difference(session_config, trained):
    """A changed dtype, shape, method and a missing signature are each one diff line."""
    config = with_signatures(
        session_config,
        predict_images=SignatureSpec(
            method="classify",
            inputs={"images": TensorSpec("float64", (-1, 64))},
            outputs={"scores": TensorSpec("float32", (-1, 12))},
        ),
        predict_digits=SignatureSpec(method="predict", inputs={}, outputs={}),
    )
    with pytest.raises(ContractMismatchError) as info:
        validate_checkpoint(config, trained.checkpoint, trained.metrics)
    diff = "\n".join(info.value.diff)
    assert "signature 'predict_digits': declared in the contract, missing from the model" in diff
    assert (
        "'predict_images': method expected tensorflow/serving/classify, got tensorflow/serving/predict"
        in diff
    )
    assert "input 'images': dtype expected float64, got float32" in diff
    assert "output 'scores': shape expected [-1, 12], got [-1, 10]" in diff


def test_quality_gate_names_metric_value_and_bound(session_config, trained):
    """A model below min_accuracy fails with the metric, its value and the bound."""
    config = dataclasses.replace(
        session_config, quality=dataclasses.replace(session_config.quality, min_accuracy=0.999)
    )
    with pytest.raises(QualityGateError, match=r"eval_accuracy=0\.9\d+, expected >= 0\.999"):
        validate_checkpoint(config, trained.checkpoint, trained.metrics)
