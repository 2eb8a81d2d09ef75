"""The quality gate: held-out metrics against the YAML's thresholds and the version served now."""

from __future__ import annotations

import numpy as np

from include.config import PipelineConfig
from include.errors import QualityGateError


def check_quality(config: PipelineConfig, metrics: dict, baseline: dict | None = None) -> None:
    """Raises QualityGateError naming the metric, its value and the bound it broke.

    Absolute thresholds always apply; with a baseline, accuracy may not drop more than
    `quality.max_accuracy_drop` below the baseline's (classification), and the held-out loss may
    not rise more than `quality.max_loss_increase` above it (a fraction; either head).
    """
    quality = config.quality
    _check_loss(config, metrics, baseline)
    if config.model.head == "regression":
        return
    accuracy = metrics.get("eval_accuracy")
    if accuracy is None or accuracy < quality.min_accuracy:
        raise QualityGateError("eval_accuracy", float(accuracy or 0.0), f">= {quality.min_accuracy}")
    served = (baseline or {}).get("metrics", {}).get("eval_accuracy")
    if quality.max_accuracy_drop is not None and served is not None:
        bound = served - quality.max_accuracy_drop
        if accuracy < bound - 1e-12:
            raise QualityGateError(
                "eval_accuracy",
                float(accuracy),
                f">= {bound:.6f} (version {baseline.get('version')} has {served:.6f}, "
                f"max_accuracy_drop {quality.max_accuracy_drop})",
            )


def _check_loss(config: PipelineConfig, metrics: dict, baseline: dict | None) -> None:
    """Raises QualityGateError when the held-out loss is above max_loss or rose too far above the baseline."""
    quality = config.quality
    loss = metrics.get("eval_loss")
    if loss is None or not np.isfinite(loss):
        raise QualityGateError("eval_loss", float("nan"), "a finite held-out loss")
    if quality.max_loss is not None and loss > quality.max_loss:
        raise QualityGateError("eval_loss", float(loss), f"<= {quality.max_loss}")
    served = (baseline or {}).get("metrics", {}).get("eval_loss")
    if quality.max_loss_increase is not None and served is not None:
        bound = served * (1 + quality.max_loss_increase)
        if loss > bound + 1e-12:
            raise QualityGateError(
                "eval_loss",
                float(loss),
                f"<= {bound:.6f} (version {baseline.get('version')} has {served:.6f}, "
                f"max_loss_increase {quality.max_loss_increase})",
            )
