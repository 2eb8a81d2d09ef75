"""Warmup requests: `assets.extra/tf_serving_warmup_requests`, replayed by TF Serving on load.

One `PredictionLog` per signature, built from held-out examples with the real request protos
of `tensorflow-serving-api`, so the first client request after a version loads is not the one
that pays for graph initialisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_logs(model_name: str, signature_def_map: dict, x: np.ndarray, feature_key: str) -> list:
    """Returns one PredictionLog per signature (predict, classify or regress) for the rows in x."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        input_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    from include.data import serialize_examples

    sm = tf.compat.v1.saved_model.signature_constants
    serialized = serialize_examples(x, feature_key)
    logs = []
    for key, signature in sorted(signature_def_map.items()):
        spec = model_pb2.ModelSpec(name=model_name, signature_name=key)
        if signature.method_name == sm.PREDICT_METHOD_NAME:
            request = predict_pb2.PredictRequest(model_spec=spec)
            for name, info in signature.inputs.items():
                dtype = tf.dtypes.as_dtype(info.dtype)
                value = (
                    np.array(serialized, dtype=object)
                    if dtype == tf.string
                    else x.astype(dtype.as_numpy_dtype)
                )
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            logs.append(
                prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            )
            continue
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
    """Returns the PredictionLogs stored in a SavedModel's warmup file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(savedmodel_dir) / WARMUP_DIR / WARMUP_FILE
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))
    ]
