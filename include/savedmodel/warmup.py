"""Warmup requests: `assets.extra/tf_serving_warmup_requests`, replayed by TF Serving on load.

One `PredictionLog` per signature, built from held-out examples with the real request protos
of `tensorflow-serving-api`, so the first client request after a version loads is not the one
that pays for graph initialisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from include.config import PipelineConfig

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_logs(config: PipelineConfig, signature_def_map: dict, examples: list[bytes]) -> list:
    """Returns one PredictionLog per signature (predict, classify or regress) for serialized example rows.

    Each signature's inputs get the model tensor its YAML declaration maps them to.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        input_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    from include.validate.signatures import model_inputs, signature_feeds

    sm = tf.compat.v1.saved_model.signature_constants
    inputs = model_inputs(examples, config)
    logs = []
    for key, signature in sorted(signature_def_map.items()):
        spec = model_pb2.ModelSpec(name=config.model.name, signature_name=key)
        feeds = signature_feeds(config.signatures[key], key, inputs)
        if signature.method_name == sm.PREDICT_METHOD_NAME:
            request = predict_pb2.PredictRequest(model_spec=spec)
            for name, value in feeds.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            logs.append(
                prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            )
            continue
        # Classify and Regress take tf.Examples (TF Serving serializes them into the `inputs` tensor).
        (serialized,) = feeds.values()
        examples = input_pb2.Input(
            example_list=input_pb2.ExampleList(examples=[tf.train.Example.FromString(s) for s in serialized])
        )
        if signature.method_name == sm.CLASSIFY_METHOD_NAME:
            request = classification_pb2.ClassificationRequest(model_spec=spec, input=examples)
            logs.append(
                prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))
            )
        elif signature.method_name == sm.REGRESS_METHOD_NAME:
            request = regression_pb2.RegressionRequest(model_spec=spec, input=examples)
            logs.append(
                prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))
            )
    return logs


def request_feeds(log) -> tuple[str, dict[str, np.ndarray]]:
    """Returns (signature key, {input name: value}) of one warmup PredictionLog, as TF Serving feeds it."""
    import tensorflow as tf

    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    if kind == "predict_log":
        return request.model_spec.signature_name, {
            name: tf.make_ndarray(proto) for name, proto in request.inputs.items()
        }
    serialized = [example.SerializeToString() for example in request.input.example_list.examples]
    return request.model_spec.signature_name, {"inputs": np.array(serialized, dtype=object)}


def write_warmup_requests(savedmodel_dir: Path, logs: list) -> Path:
    """Writes PredictionLogs as the TFRecord file TF Serving reads at load; returns its path."""
    import tensorflow as tf

    target = Path(savedmodel_dir) / WARMUP_DIR / WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for record in logs:
            writer.write(record.SerializeToString(deterministic=True))
    return target


def read_warmup_requests(savedmodel_dir: Path) -> list:
    """Returns the PredictionLogs stored in a SavedModel's warmup file (none if it has no file)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(savedmodel_dir) / WARMUP_DIR / WARMUP_FILE
    if not path.is_file():
        return []
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))
    ]
