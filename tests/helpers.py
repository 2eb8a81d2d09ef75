"""Helpers shared by the tests: pipeline YAMLs, assertions, fresh-process scoring, a local Airflow.

Tests import these from here; conftest.py files hold only fixtures (and import from here too).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from include.config import DEFAULT_PIPELINES_DIR
from include.savedmodel.files import missing_parts
from tools.local_airflow import LocalAirflow, free_port

EXAMPLE_YAML = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"
#: The second example: a Keras regression over named numeric features and a string one.
DIABETES_YAML = DEFAULT_PIPELINES_DIR / "diabetes_keras.yaml"
#: A date after the last example partition: runs dated here see the whole data set.
AFTER_ALL_DATA = dt.date(2026, 11, 1)
#: The `airflow` CLI of this interpreter's environment.
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

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


#: Names the writers give their work in progress (publish's staging dirs or anything in a model
#: dir's `.staging/`, atomic writes' temp files, an export's or a checkpoint's temporary dir,
#: retention's doomed dirs): none may outlive a run.
LEFTOVER_PATTERNS = (".staging-*", ".staging/*", ".tmp-*", ".*.tmp", ".*-tmp-*", ".deleting-*")


def leftovers(root: Path) -> list[Path]:
    """Returns the staging dirs and temp files under `root`, at any depth (a finished run leaves none)."""
    return sorted({path for pattern in LEFTOVER_PATTERNS for path in root.rglob(pattern)})


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


def eval_sample(checkpoint: str) -> list[bytes]:
    """Returns the held-out examples (serialized tf.Examples) training stored beside a checkpoint."""
    from include.train.data import read_sample
    from include.train.training import EVAL_SAMPLE_FILE

    return read_sample(Path(checkpoint).parent / EVAL_SAMPLE_FILE)


def checkpoint_outputs(config, checkpoint: str, examples: list[bytes], output: str = "scores") -> np.ndarray:
    """Returns one head output (scores, predictions...) of the in-training model on serialized examples."""
    import tensorflow as tf

    from include.train.model import build_serving_graph

    serving = build_serving_graph(config)
    with tf.compat.v1.Session(graph=serving.graph) as sess:
        tf.compat.v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        sess.run(tf.compat.v1.tables_initializer())
        return sess.run(serving.outputs[output], feed_dict={serving.serialized_examples: examples})


def checkpoint_scores(config, checkpoint: str, examples: list[bytes]) -> np.ndarray:
    """Returns the softmax scores of the in-training model (graph rebuilt from the checkpoint)."""
    return checkpoint_outputs(config, checkpoint, examples, "scores")


# --- pipeline YAMLs ---------------------------------------------------------------------------


def example_raw() -> dict:
    """Returns the example pipeline's YAML as a fresh dict (edit it freely)."""
    return yaml.safe_load(EXAMPLE_YAML.read_text())


def diabetes_raw() -> dict:
    """Returns the regression example's YAML (diabetes_keras) as a fresh dict."""
    return yaml.safe_load(DIABETES_YAML.read_text())


def write_pipeline(directory: Path, raw: dict, filename: str | None = None) -> Path:
    """Writes a pipeline YAML into `directory` and returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or f"{raw.get('name', 'pipeline')}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_raw(root: Path, data: Path, **overrides) -> dict:
    """Returns the example YAML pointed at `data`, with roots under `root` and top-level overrides."""
    raw = example_raw()
    raw["data"]["location"] = str(data)
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    raw.update(overrides)
    return raw


# --- training data, whole and damaged ----------------------------------------------------------

#: The partition the bad-data tests damage, and a run date whose window (window_days 4) holds it.
DAMAGED_DAY = "dt=2026-10-15"
SMALL_WINDOW_DATE = dt.date(2026, 10, 18)


def copy_data(source: Path, target: Path) -> Path:
    """Returns a copy of a data location (all its partitions) at `target`, free to damage."""
    import shutil

    shutil.copytree(source, target)
    return target


def read_records(file: Path) -> list[bytes]:
    """Returns the records of a TFRecord file."""
    import tensorflow as tf

    return [record.numpy() for record in tf.data.TFRecordDataset(str(file))]


def write_records(file: Path, records: list[bytes]) -> None:
    """Writes `records` as a TFRecord file (replacing it)."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(file)) as writer:
        for record in records:
            writer.write(record)


def example_values(record: bytes) -> dict[str, list]:
    """Returns {key: list of values} of a serialized tf.Example (what make_example takes back)."""
    from tensorflow.core.example import example_pb2

    features = example_pb2.Example.FromString(record).features.feature
    return {key: list(getattr(f, f.WhichOneof("kind")).value) for key, f in features.items()}


def split_indexes(records: list[bytes], eval_percent: int, *, held: bool, id_key: str = "id") -> list[int]:
    """Returns the indexes of the records in the held-out split (held=True) or in the train split."""
    from include.train.data import held_out

    ids = np.array([example_values(r)[id_key][0] for r in records])
    membership = held_out(ids, eval_percent).numpy()
    return [i for i, is_held in enumerate(membership) if bool(is_held) == held]


def record_offsets(file: Path) -> list[tuple[int, int]]:
    """Returns (offset, data length) of each record of a TFRecord file, from its length headers."""
    import struct

    data, offsets, position = file.read_bytes(), [], 0
    while position < len(data):
        (length,) = struct.unpack("<Q", data[position : position + 8])
        offsets.append((position, length))
        position += 8 + 4 + length + 4
    return offsets


def small_window_config(root: Path, data: Path, **raw_changes):
    """Returns the example config on `data` over 4 partitions (one epoch of ~240 examples), roots in `root`.

    `raw_changes` are {section: {key: value}} merged into the YAML's sections.
    """
    from include.config import load_pipeline_config

    raw = make_raw(root, data)
    raw["data"]["window_days"] = 4
    raw["training"].pop("steps")
    raw["training"]["epochs"] = 1
    for section, changes in raw_changes.items():
        raw.setdefault(section, {}).update(changes)
    return load_pipeline_config(write_pipeline(root / "pipelines", raw))


# --- the registry -----------------------------------------------------------------------------

#: The serving policy the registry tests publish with: the latest 2 versions plus labelled ones.
LATEST_TWO = {"version_policy": "latest", "num_latest": 2}


def publish_digits(exported: Path, serving_root: Path, version: int, **kwargs):
    """Publishes `exported` as `version` of model `digits` with a small lineage record."""
    from include.registry.publish import publish_version

    record = {
        "run_type": kwargs.pop("run_type", "scheduled"),
        "metrics": {"eval_accuracy": 0.95},
        "logical_date": "2026-10-12T00:00:00+00:00",
    }
    return publish_version(
        exported, serving_root, "digits", version, record=record, serving_policy=LATEST_TWO, **kwargs
    )


def parse_models_config(serving_root: Path):
    """Returns `<serving_root>/models.config` parsed with TF Serving's own ModelServerConfig proto."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from include.registry.serving_config import MODELS_CONFIG_FILE

    return text_format.Parse(
        (serving_root / MODELS_CONFIG_FILE).read_text(), model_server_config_pb2.ModelServerConfig()
    )


# --- a real Airflow (end-to-end tests) --------------------------------------------------------


@dataclass
class AirflowEnv:
    """A throwaway Airflow installation and the roots its pipeline writes to."""

    home: Path
    pipelines: Path
    root: Path
    env: dict

    def run(self, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Runs an `airflow` CLI command in this environment; on failure shows its output tail."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"airflow {' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-6000:]}"
            )
        return done


@contextlib.contextmanager
def running_airflow(home: Path, pipelines: Path) -> Iterator[LocalAirflow]:
    """Starts a local Airflow (all components, free ports) reading `pipelines`; always stops it."""
    local = LocalAirflow(
        home, port=free_port(), fast=True, extra_env={"SAVEDMODEL_PIPELINES_DIR": str(pipelines)}
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()
