"""Serving signatures: built from the YAML, checked against its contract, run on held-out rows, compared."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from include.config import PipelineConfig, SignatureSpec, TensorSpec
from include.data import read_sample
from include.errors import ContractMismatchError, IncompleteModelError, QualityGateError
from include.features import feature_values, request_examples
from include.model import ServingGraph, build_serving_graph
from include.training import EVAL_SAMPLE_FILE, METRICS_FILE

log = logging.getLogger(__name__)

METHOD_NAMES = {
    "predict": "tensorflow/serving/predict",
    "classify": "tensorflow/serving/classify",
    "regress": "tensorflow/serving/regress",
}

#: Model tensors a signature input can be fed through, besides `features.<name>`.
INPUT_TENSORS = ("examples",)


def build_signature_def_map(serving: ServingGraph, contract: dict[str, SignatureSpec]) -> dict:
    """Returns the signature_def_map the YAML's `signatures:` block declares, over `serving`'s tensors.

    Every input and output is the model tensor its `tensor:` key names (see SignatureSpec.tensor_of);
    the method names are TensorFlow Serving's.
    """
    import tensorflow as tf

    sm = tf.compat.v1.saved_model
    signature_def_map = {}
    with serving.graph.as_default():
        for key, spec in contract.items():
            tensors = {
                kind: {
                    name: sm.utils.build_tensor_info(serving.tensor(spec.tensor_of(kind, name)))
                    for name in getattr(spec, kind)
                }
                for kind in ("inputs", "outputs")
            }
            signature_def_map[key] = sm.signature_def_utils.build_signature_def(
                inputs=tensors["inputs"], outputs=tensors["outputs"], method_name=METHOD_NAMES[spec.method]
            )
    return signature_def_map


def model_inputs(examples: list[bytes], config: PipelineConfig) -> dict[str, np.ndarray]:
    """Returns the values of the input model tensors for serialized example rows.

    `examples` are the serialized tf.Examples as clients send them (label and id dropped), and
    `features.<name>` each declared feature parsed from them, as a predict client sends it.
    """
    requests = request_examples(examples, config)
    values = feature_values(requests, config)
    return {
        "examples": np.array(requests, dtype=object),
        **{f"features.{name}": value for name, value in values.items()},
    }


def signature_feeds(spec: SignatureSpec, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Returns {signature input name: value} for one signature, from `model_inputs()`."""
    feeds = {}
    for name in spec.inputs:
        tensor = spec.tensor_of("inputs", name)
        if tensor not in inputs:
            raise ContractMismatchError(
                [
                    f"signature {key!r} input {name!r}: tensor {tensor!r} is not an input (expected "
                    f"{[*INPUT_TENSORS, *(k for k in inputs if k.startswith('features.'))]})"
                ]
            )
        feeds[name] = inputs[tensor]
    return feeds


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
        expected_method = METHOD_NAMES[spec.method]
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
        "reference_outputs": outputs_to_json(outputs),
    }


def run_signatures(sess, signature_def_map: dict, config: PipelineConfig, examples: list[bytes]) -> dict:
    """Returns {key: {output: array}} from running every signature on serialized example rows in `sess`.

    Works for any session holding the signatures' graph (a restored checkpoint, a loaded
    SavedModel): inputs and outputs are fed and fetched by the tensor names in each SignatureDef.
    """
    inputs = model_inputs(examples, config)
    results = {}
    for key, sig in sorted(signature_def_map.items()):
        spec = config.signatures.get(key)
        if spec is None:
            raise ContractMismatchError([f"signature {key!r}: in the model, not declared in the contract"])
        feeds = signature_feeds(spec, key, inputs)
        missing = sorted(set(feeds) - set(sig.inputs))
        if missing:
            raise ContractMismatchError(
                [f"signature {key!r}: inputs {missing} declared, missing from the model"]
            )
        values = sess.run(
            {name: info.name for name, info in sig.outputs.items()},
            feed_dict={sig.inputs[name].name: value for name, value in feeds.items()},
        )
        for name, value in values.items():
            if len(value) != len(examples):
                raise ContractMismatchError(
                    [f"signature {key!r} output {name!r}: expected {len(examples)} rows, got {len(value)}"]
                )
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise QualityGateError(f"{key}.{name}", float("nan"), "finite values on held-out rows")
        results[key] = values
    return results


def outputs_to_json(outputs: dict) -> dict:
    """Returns signature outputs as JSON-able lists (strings decoded as UTF-8)."""
    return {
        key: {name: _to_list(value) for name, value in sorted(values.items())}
        for key, values in sorted(outputs.items())
    }


def _to_list(value: np.ndarray) -> list:
    if value.dtype.kind in "OS":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def outputs_diff(reference: dict, outputs: dict, *, rows: int | None = None) -> list[str]:
    """Returns one line per signature output that differs from the reference (floats to 1e-5).

    `rows` compares only the first rows of the reference (warmup requests replay a prefix).
    """
    actual = outputs_to_json(outputs)
    diff = []
    for key in sorted(set(reference) | set(actual)):
        want_sig, got_sig = reference.get(key), actual.get(key)
        if want_sig is None or got_sig is None:
            diff.append(f"signature {key!r}: {'missing' if got_sig is None else 'not in the reference'}")
            continue
        for name in sorted(set(want_sig) | set(got_sig)):
            if name not in got_sig or name not in want_sig:
                diff.append(f"signature {key!r} output {name!r}: present in only one of them")
                continue
            want, got = want_sig[name][:rows], got_sig[name]
            if np.shape(want) != np.shape(got):
                diff.append(
                    f"signature {key!r} output {name!r}: shape {list(np.shape(got))}, "
                    f"expected {list(np.shape(want))}"
                )
            elif np.asarray(want).dtype.kind == "f":
                error = float(np.max(np.abs(np.asarray(want) - np.asarray(got)), initial=0.0))
                if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                    diff.append(
                        f"signature {key!r} output {name!r}: differs from the trained model "
                        f"by up to {error:.6g}"
                    )
            elif want != got:
                diff.append(f"signature {key!r} output {name!r}: values differ from the trained model")
    return diff


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
