"""Serving signatures: build the signature_def_map, check it against the YAML contract, smoke-run it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from include.config import PipelineConfig, SignatureSpec, TensorSpec
from include.data import serialize_examples
from include.errors import ContractMismatchError, IncompleteModelError, QualityGateError
from include.model import ServingGraph, build_serving_graph
from include.training import EVAL_SAMPLE_FILE, METRICS_FILE

log = logging.getLogger(__name__)

PREDICT_SIGNATURE_KEY = "predict_images"

_METHOD_NAMES = {
    "predict": "tensorflow/serving/predict",
    "classify": "tensorflow/serving/classify",
    "regress": "tensorflow/serving/regress",
}


def build_signature_def_map(serving: ServingGraph) -> dict:
    """Returns the tutorial's signatures: `predict_images` and a classify `serving_default`."""
    import tensorflow as tf

    sm = tf.compat.v1.saved_model
    with serving.graph.as_default():
        return _build_signature_def_map(serving, sm)


def _build_signature_def_map(serving: ServingGraph, sm) -> dict:
    info = sm.utils.build_tensor_info
    classify = sm.signature_def_utils.build_signature_def(
        inputs={sm.signature_constants.CLASSIFY_INPUTS: info(serving.serialized_examples)},
        outputs={
            sm.signature_constants.CLASSIFY_OUTPUT_CLASSES: info(serving.top_classes),
            sm.signature_constants.CLASSIFY_OUTPUT_SCORES: info(serving.top_scores),
        },
        method_name=sm.signature_constants.CLASSIFY_METHOD_NAME,
    )
    predict = sm.signature_def_utils.build_signature_def(
        inputs={"images": info(serving.features)},
        outputs={"scores": info(serving.scores)},
        method_name=sm.signature_constants.PREDICT_METHOD_NAME,
    )
    return {
        PREDICT_SIGNATURE_KEY: predict,
        sm.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classify,
    }


def describe_signatures(signature_def_map: dict) -> dict:
    """Returns signatures as plain data: {key: {method, inputs: {name: {dtype, shape}}, outputs}}."""
    import tensorflow as tf

    def tensor(info) -> dict:
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape}

    return {
        key: {
            "method": sig.method_name,
            "inputs": {name: tensor(i) for name, i in sorted(sig.inputs.items())},
            "outputs": {name: tensor(o) for name, o in sorted(sig.outputs.items())},
        }
        for key, sig in sorted(signature_def_map.items())
    }


def signature_fingerprint(described: dict) -> str:
    """Returns a SHA-256 over the canonical JSON of described signatures."""
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def contract_diff(described: dict, contract: dict[str, SignatureSpec]) -> list[str]:
    """Returns one readable line per difference between signatures and the contract."""
    diff = []
    for key in sorted(set(contract) - set(described)):
        diff.append(f"signature {key!r}: declared in the contract, missing from the model")
    for key in sorted(set(described) - set(contract)):
        diff.append(f"signature {key!r}: in the model, not declared in the contract")
    for key in sorted(set(contract) & set(described)):
        spec, actual = contract[key], described[key]
        expected_method = _METHOD_NAMES[spec.method]
        if actual["method"] != expected_method:
            diff.append(f"signature {key!r}: method expected {expected_method}, got {actual['method']}")
        diff.extend(_tensors_diff(f"signature {key!r} input", spec.inputs, actual["inputs"]))
        diff.extend(_tensors_diff(f"signature {key!r} output", spec.outputs, actual["outputs"]))
    return diff


def _tensors_diff(label: str, expected: dict[str, TensorSpec], actual: dict[str, dict]) -> list[str]:
    """Returns the differences between contract tensors and a signature's tensors."""
    diff = []
    for name in sorted(set(expected) - set(actual)):
        diff.append(f"{label} {name!r}: declared in the contract, missing from the model")
    for name in sorted(set(actual) - set(expected)):
        diff.append(f"{label} {name!r}: in the model, not declared in the contract")
    for name in sorted(set(expected) & set(actual)):
        want, got = expected[name], actual[name]
        if want.dtype != got["dtype"]:
            diff.append(f"{label} {name!r}: dtype expected {want.dtype}, got {got['dtype']}")
        want_shape = None if want.shape is None else list(want.shape)
        if want_shape != got["shape"]:
            diff.append(f"{label} {name!r}: shape expected {want_shape}, got {got['shape']}")
    return diff


def compatibility_diff(served: dict, candidate: dict) -> list[str]:
    """Returns the changes from the served signatures that would break existing clients.

    Breaking: a signature, input or output removed; a method, dtype or shape changed; a new
    input (clients do not send it). Adding signatures or outputs is compatible.
    """
    diff = []
    for key in sorted(set(served) - set(candidate)):
        diff.append(f"signature {key!r} removed")
    for key in sorted(set(served) & set(candidate)):
        old, new = served[key], candidate[key]
        if old["method"] != new["method"]:
            diff.append(f"signature {key!r}: method changed from {old['method']} to {new['method']}")
        for kind in ("inputs", "outputs"):
            for name in sorted(set(old[kind]) - set(new[kind])):
                diff.append(f"signature {key!r}: {kind[:-1]} {name!r} removed")
            if kind == "inputs":
                for name in sorted(set(new[kind]) - set(old[kind])):
                    diff.append(f"signature {key!r}: new input {name!r} that clients do not send")
            for name in sorted(set(old[kind]) & set(new[kind])):
                for attr in ("dtype", "shape"):
                    if old[kind][name][attr] != new[kind][name][attr]:
                        diff.append(
                            f"signature {key!r}: {kind[:-1]} {name!r} {attr} changed from "
                            f"{old[kind][name][attr]} to {new[kind][name][attr]}"
                        )
    return diff


def validate_checkpoint(
    config: PipelineConfig,
    checkpoint: str,
    metrics: dict | None = None,
    *,
    baseline: dict | None = None,
    force_reason: str | None = None,
    allow_breaking_change: bool = False,
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
    signature_def_map = build_signature_def_map(serving)
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

    sample = np.load(checkpoint_dir / EVAL_SAMPLE_FILE)
    with v1.Session(graph=serving.graph) as sess:
        try:
            v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
            raise IncompleteModelError(str(checkpoint_dir), [f"cannot restore checkpoint: {err}"]) from None
        sess.run(v1.tables_initializer())
        outputs = smoke_run(sess, signature_def_map, sample["x"], config.data.feature_key)
    _check_predictions_agree(outputs)
    log.info("signatures match the contract and answer smoke requests: %s", sorted(described))

    verdict = "passed"
    try:
        check_quality(config, metrics, baseline)
    except QualityGateError as err:
        if not force_reason:
            raise
        log.warning("quality gate failed but force_publish overrides it (%s): %s", force_reason, err)
        verdict = "forced"
    return {
        "signatures": described,
        "signature_fingerprint": signature_fingerprint(described),
        "verdict": verdict,
        "baseline_version": baseline.get("version") if baseline else None,
    }


def smoke_run(sess, signature_def_map: dict, x: np.ndarray, feature_key: str) -> dict:
    """Returns {key: {output: array}} from running every signature on a few real examples.

    String inputs get serialized tf.Examples, float inputs the feature matrix.
    """
    import tensorflow as tf

    serialized = np.array(serialize_examples(x, feature_key), dtype=object)
    results = {}
    for key, sig in signature_def_map.items():
        feed = {}
        for name, info in sig.inputs.items():
            dtype = tf.dtypes.as_dtype(info.dtype)
            if dtype == tf.string:
                feed[info.name] = serialized
            elif dtype.is_floating:
                feed[info.name] = x.astype(dtype.as_numpy_dtype)
            else:
                raise ContractMismatchError(
                    [f"signature {key!r} input {name!r}: no smoke input for {dtype.name}"]
                )
        fetches = {name: info.name for name, info in sig.outputs.items()}
        values = sess.run(fetches, feed_dict=feed)
        for name, value in values.items():
            if len(value) != len(x):
                raise ContractMismatchError(
                    [f"signature {key!r} output {name!r}: expected {len(x)} rows, got {len(value)}"]
                )
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise QualityGateError(f"{key}.{name}", float("nan"), "finite values on smoke inputs")
        results[key] = values
    return results


def _check_predictions_agree(outputs: dict) -> None:
    """Raises unless the predict and classify signatures give the same top class and score."""
    predict, classify = outputs.get(PREDICT_SIGNATURE_KEY), outputs.get("serving_default")
    if predict is None or classify is None or "scores" not in predict:
        return
    if not {"classes", "scores"} <= set(classify):
        return
    best = predict["scores"].max(axis=1)
    if not np.allclose(best, classify["scores"][:, 0], atol=1e-6):
        raise ContractMismatchError(["serving_default scores disagree with predict_images scores"])


def check_quality(config: PipelineConfig, metrics: dict, baseline: dict | None = None) -> None:
    """Raises QualityGateError naming the metric, its value and the bound it broke.

    Absolute thresholds always apply; with a baseline, accuracy may not drop more than
    `quality.max_accuracy_drop` below the baseline's.
    """
    quality = config.quality
    accuracy = metrics.get("eval_accuracy")
    if accuracy is None or accuracy < quality.min_accuracy:
        raise QualityGateError("eval_accuracy", float(accuracy or 0.0), f">= {quality.min_accuracy}")
    loss = metrics.get("eval_loss")
    if quality.max_loss is not None and (loss is None or loss > quality.max_loss):
        raise QualityGateError(
            "eval_loss", float(loss if loss is not None else "nan"), f"<= {quality.max_loss}"
        )
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
