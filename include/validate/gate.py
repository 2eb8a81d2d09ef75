"""The quality gate: held-out metrics, overall and by slice, against the YAML's thresholds and the baseline.

Every check is a row of the gate's report (the data checks' `Check`): the task fails on the first
failing row (QualityGateError, carrying the whole report), and a passed or forced gate's rows are
recorded with the version.
"""

from __future__ import annotations

import numpy as np

from include.config import PipelineConfig
from include.errors import QualityGateError
from include.validate.data_checks import Check


def check_quality(
    config: PipelineConfig, metrics: dict, baseline: dict | None = None, slices: dict | None = None
) -> list[dict]:
    """Returns the gate's report (rows); raises QualityGateError naming the first metric out of bounds.

    Absolute thresholds always apply; with a baseline, accuracy may not drop more than
    `quality.max_accuracy_drop` below the baseline's (classification), and the held-out loss may
    not rise more than `quality.max_loss_increase` above it (a fraction; either head). Each of
    `quality.slices` is held to its own bounds, and to the baseline's same slice.
    """
    rows = [
        row.to_dict()
        for row in [*_overall(config, metrics, baseline), *_slices(config, slices or {}, baseline)]
    ]
    for row in rows:
        if row["verdict"] == "fail":
            metric = row["statistic"] if row["kind"] == "metric" else f"{row['subject']} {row['statistic']}"
            value = row["value"] if isinstance(row["value"], (int, float)) else float("nan")
            raise QualityGateError(metric, float(value), row["threshold"], report=rows)
    return rows


def _row(kind: str, subject: str, statistic: str, value, threshold: str, source: str, ok: bool) -> Check:
    """Returns one row of the gate's report."""
    return Check(kind, subject, statistic, value, threshold, source, "pass" if ok else "fail")


def _overall(config: PipelineConfig, metrics: dict, baseline: dict | None) -> list[Check]:
    """Returns the rows of the held-out loss and accuracy: finite, absolute bounds, against the baseline."""
    quality = config.quality
    rows = []
    loss = metrics.get("eval_loss")
    finite = loss is not None and bool(np.isfinite(loss))
    rows.append(
        _row("metric", "metric eval_loss", "eval_loss", loss, "a finite held-out loss", "always", finite)
    )
    if not finite:
        return rows
    if quality.max_loss is not None:
        rows.append(
            _row(
                "metric",
                "metric eval_loss",
                "eval_loss",
                loss,
                f"<= {quality.max_loss}",
                "declared",
                loss <= quality.max_loss,
            )
        )
    served = (baseline or {}).get("metrics", {}).get("eval_loss")
    if quality.max_loss_increase is not None and served is not None:
        bound = served * (1 + quality.max_loss_increase)
        threshold = (
            f"<= {bound:.6f} (version {baseline.get('version')} has {served:.6f}, "
            f"max_loss_increase {quality.max_loss_increase})"
        )
        rows.append(
            _row(
                "metric", "metric eval_loss", "eval_loss", loss, threshold, "baseline", loss <= bound + 1e-12
            )
        )
    if config.model.head == "regression":
        return rows
    accuracy = metrics.get("eval_accuracy")
    rows.append(
        _row(
            "metric",
            "metric eval_accuracy",
            "eval_accuracy",
            float(accuracy or 0.0),
            f">= {quality.min_accuracy}",
            "declared",
            accuracy is not None and accuracy >= quality.min_accuracy,
        )
    )
    served = (baseline or {}).get("metrics", {}).get("eval_accuracy")
    if quality.max_accuracy_drop is not None and served is not None and accuracy is not None:
        bound = served - quality.max_accuracy_drop
        threshold = (
            f">= {bound:.6f} (version {baseline.get('version')} has {served:.6f}, "
            f"max_accuracy_drop {quality.max_accuracy_drop})"
        )
        rows.append(
            _row(
                "metric",
                "metric eval_accuracy",
                "eval_accuracy",
                accuracy,
                threshold,
                "baseline",
                accuracy >= bound - 1e-12,
            )
        )
    return rows


def _slices(config: PipelineConfig, slices: dict, baseline: dict | None) -> list[Check]:
    """Returns the rows of each declared slice: not emptied, absolute bounds, against the baseline's slice."""
    rows = []
    version = (baseline or {}).get("version")
    for spec in config.quality.slices:
        found = slices.get(spec.by, {})
        before = ((baseline or {}).get("slices") or {}).get(spec.by, {})
        for key in sorted({*found, *before}):
            subject = f"slice {spec.by}={key}"
            now, then = found.get(key, {"examples": 0}), before.get(key)
            if then and then.get("examples", 0) >= spec.min_examples:
                rows.append(
                    _row(
                        "slice",
                        subject,
                        "examples",
                        now["examples"],
                        f">= {spec.min_examples} (version {version} had {then['examples']})",
                        "baseline",
                        now["examples"] >= spec.min_examples,
                    )
                )
            if not now["examples"]:
                continue
            accuracy, loss = now.get("eval_accuracy"), now.get("eval_loss")
            if spec.min_accuracy is not None and accuracy is not None:
                rows.append(
                    _row(
                        "slice",
                        subject,
                        "eval_accuracy",
                        accuracy,
                        f">= {spec.min_accuracy}",
                        "declared",
                        accuracy >= spec.min_accuracy,
                    )
                )
            if spec.max_loss is not None and loss is not None:
                rows.append(
                    _row(
                        "slice",
                        subject,
                        "eval_loss",
                        loss,
                        f"<= {spec.max_loss}",
                        "declared",
                        loss <= spec.max_loss,
                    )
                )
            if not then or not then.get("examples"):
                continue
            if (
                spec.max_accuracy_drop is not None
                and accuracy is not None
                and then.get("eval_accuracy") is not None
            ):
                bound = then["eval_accuracy"] - spec.max_accuracy_drop
                threshold = f">= {bound:.6f} (version {version} has {then['eval_accuracy']:.6f})"
                rows.append(
                    _row(
                        "slice",
                        subject,
                        "eval_accuracy",
                        accuracy,
                        threshold,
                        "baseline",
                        accuracy >= bound - 1e-12,
                    )
                )
            if spec.max_loss_increase is not None and loss is not None and then.get("eval_loss") is not None:
                bound = then["eval_loss"] * (1 + spec.max_loss_increase)
                threshold = f"<= {bound:.6f} (version {version} has {then['eval_loss']:.6f})"
                rows.append(
                    _row("slice", subject, "eval_loss", loss, threshold, "baseline", loss <= bound + 1e-12)
                )
    return rows
