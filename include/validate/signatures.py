"""Serving signatures: built from the YAML, checked against its contract, run on rows, compared.

The quality gate is include/validate/gate.py; the step that runs both on a checkpoint is
include/validate/checkpoint.py.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from include.config import PipelineConfig, SignatureSpec, TensorSpec
from include.errors import ContractMismatchError, QualityGateError
from include.train.features import feature_values, request_examples
from include.train.model import ServingGraph

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
