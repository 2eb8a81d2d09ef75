"""Assertion helpers and model utilities shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from include.savedmodel_dir import missing_parts

#: Runs in a fresh Python process: loads a SavedModel with TF2 and runs both signatures.
_SCORE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
path, serialized_file = sys.argv[1], sys.argv[2]
serialized = [bytes.fromhex(h) for h in json.load(open(serialized_file))]
model = tf.saved_model.load(path, tags=["serve"])
classify = model.signatures["serving_default"](inputs=tf.constant(serialized))
x = tf.io.parse_example(tf.constant(serialized), {"x": tf.io.FixedLenFeature([64], tf.float32)})["x"]
predict = model.signatures["predict_images"](images=x)
print(json.dumps({
    "classes": [[c.decode() for c in row] for row in classify["classes"].numpy()],
    "top_scores": classify["scores"].numpy().tolist(),
    "scores": predict["scores"].numpy().tolist(),
}))
"""


def assert_complete(version_dir: Path) -> None:
    """Asserts a directory is a complete SavedModel (pb, index and every shard)."""
    assert missing_parts(version_dir) == [], missing_parts(version_dir)


def score_in_fresh_process(version_dir: Path, serialized: list[bytes], tmp_path: Path) -> dict:
    """Returns classify/predict outputs of a SavedModel loaded by a new Python process."""
    payload = tmp_path / "serialized.json"
    payload.write_text(json.dumps([s.hex() for s in serialized]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _SCORE_SCRIPT, str(version_dir), str(payload)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    return {k: np.array(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def checkpoint_scores(config, checkpoint: str, x: np.ndarray) -> np.ndarray:
    """Returns the softmax scores of the in-training model (graph rebuilt from the checkpoint)."""
    import tensorflow as tf

    from include.model import build_serving_graph

    serving = build_serving_graph(config)
    with tf.compat.v1.Session(graph=serving.graph) as sess:
        tf.compat.v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        return sess.run(serving.scores, feed_dict={serving.features: x})
