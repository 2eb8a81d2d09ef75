"""Warmup requests: written into assets.extra at export, readable, and replayable against the model."""

from __future__ import annotations

import numpy as np

from include.savedmodel.warmup import WARMUP_DIR, WARMUP_FILE, read_warmup_requests
from include.train.features import request_examples
from tests.helpers import checkpoint_scores, eval_sample


def test_export_carries_one_warmup_request_per_signature(exported):
    """The file holds a predict request for predict_images and a classify one for serving_default."""
    assert (exported / WARMUP_DIR / WARMUP_FILE).is_file()
    logs = read_warmup_requests(exported)
    kinds = {log.WhichOneof("log_type"): log for log in logs}
    assert set(kinds) == {"predict_log", "classify_log"}
    assert kinds["predict_log"].predict_log.request.model_spec.signature_name == "predict_images"
    assert kinds["classify_log"].classify_log.request.model_spec.signature_name == "serving_default"
    assert len(kinds["classify_log"].classify_log.request.input.example_list.examples) == 8


def test_replaying_warmup_requests_gives_the_training_scores(session_config, trained, exported):
    """Each stored request, fed to the loaded SavedModel, answers like the in-training model."""
    import tensorflow as tf

    model = tf.saved_model.load(str(exported), tags=["serve"])
    sample = request_examples(eval_sample(trained.checkpoint)[:8], session_config)
    expected = checkpoint_scores(session_config, trained.checkpoint, sample)
    for log in read_warmup_requests(exported):
        if log.HasField("predict_log"):
            request = log.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            scores = model.signatures[request.model_spec.signature_name](**inputs)["scores"].numpy()
            np.testing.assert_allclose(scores, expected, atol=1e-5)
        else:
            request = log.classify_log.request
            serialized = [e.SerializeToString() for e in request.input.example_list.examples]
            out = model.signatures[request.model_spec.signature_name](inputs=tf.constant(serialized))
            np.testing.assert_allclose(out["scores"].numpy(), -np.sort(-expected, axis=1), atol=1e-5)
