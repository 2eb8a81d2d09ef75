"""Validate a trained checkpoint: rebuild its serving graph, check the signatures, smoke-run, gate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from include.config import PipelineConfig
from include.errors import ContractMismatchError, IncompleteModelError, QualityGateError
from include.train.data import read_sample
from include.train.model import build_serving_graph
from include.train.training import EVAL_SAMPLE_FILE, METRICS_FILE
from include.validate.gate import check_quality
from include.validate.signatures import (
    build_signature_def_map,
    compatibility_diff,
    contract_diff,
    describe_signatures,
    outputs_to_json,
    run_signatures,
    signature_fingerprint,
)

log = logging.getLogger(__name__)


def validate_checkpoint(
    config: PipelineConfig,
    checkpoint: str,
    metrics: dict | None = None,
    *,
    baseline: dict | None = None,
    force_reason: str | None = None,
    allow_breaking_change: bool = False,
    slices: dict | None = None,
) -> dict:
    """Returns the verdict of rebuilding, contract-checking, smoke-running and gating a checkpoint.

    `baseline` is the manifest entry of the version served now (`stable`, else the newest);
    without one (the first publish) only the absolute thresholds apply. A `force_reason`
    overrides a failed quality gate (recorded as verdict "forced"), never a contract mismatch.
    Raises ContractMismatchError, QualityGateError or IncompleteModelError (all permanent).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    checkpoint_dir = Path(checkpoint).parent
    if metrics is None:
        metrics = json.loads((checkpoint_dir / METRICS_FILE).read_text())
    serving = build_serving_graph(config)
    signature_def_map = build_signature_def_map(serving, config.signatures)
    described = describe_signatures(signature_def_map)
    diff = contract_diff(described, config.signatures)
    if diff:
        raise ContractMismatchError(diff)
    if baseline and baseline.get("signatures"):
        breaking = compatibility_diff(baseline["signatures"], described)
        if breaking and not (allow_breaking_change or config.quality.allow_breaking_signature_change):
            raise ContractMismatchError(
                [
                    *breaking,
                    f"(against version {baseline.get('version')}; set "
                    "quality.allow_breaking_signature_change or trigger with allow_breaking_change=true "
                    "if clients are ready)",
                ]
            )

    sample = read_sample(checkpoint_dir / EVAL_SAMPLE_FILE)
    with v1.Session(graph=serving.graph) as sess:
        try:
            v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
            raise IncompleteModelError(str(checkpoint_dir), [f"cannot restore checkpoint: {err}"]) from None
        sess.run(v1.tables_initializer())
        outputs = run_signatures(sess, signature_def_map, config, sample)
    log.info("signatures match the contract and answer %d held-out rows: %s", len(sample), sorted(described))

    verdict = "passed"
    try:
        checks = check_quality(config, metrics, baseline, slices)
    except QualityGateError as err:
        if not force_reason:
            raise
        log.warning("quality gate failed but force_publish overrides it (%s): %s", force_reason, err)
        verdict = "forced"
        checks = [
            {**row, "verdict": "forced" if row["verdict"] == "fail" else row["verdict"]} for row in err.report
        ]
    return {
        "checks": checks,
        "signatures": described,
        "signature_fingerprint": signature_fingerprint(described),
        "verdict": verdict,
        "baseline_version": baseline.get("version") if baseline else None,
        "reference_outputs": outputs_to_json(outputs),
    }
