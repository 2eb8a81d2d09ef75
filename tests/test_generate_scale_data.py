"""scripts/generate_scale_data.py: hand-encoded tf.Examples and TFRecord frames, partitions, the input.

The generator writes the protobuf and TFRecord bytes itself (NumPy, no TensorFlow): they must be
exactly those TensorFlow writes, and the pipeline's own streaming input must read them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from include.config import PROJECT_ROOT, load_pipeline_config
from include.train.data import input_dataset
from include.train.features import make_example
from include.train.window import data_window
from tests.helpers import EXAMPLE_YAML

SCRIPT = PROJECT_ROOT / "scripts" / "generate_scale_data.py"
AS_OF = dt.date(2026, 11, 1)


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_scale_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def generate(out: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return done.stdout


def digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(root.rglob("*.tfrecord")):
        sha.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


@pytest.mark.parametrize(
    "ids", [[0, 1, 9, 127], [128, 300, 16383], [16384, 2**21 - 1], [2**21, 9_999_999], [2**28, 2**35 - 1]]
)
def test_examples_are_the_bytes_tensorflow_serializes(ids):
    """Every varint size of the id: the bytes of make_example (deterministic serialization)."""
    rng = np.random.default_rng(len(ids))
    ids = np.array(ids, dtype=np.int64)
    labels = rng.integers(0, 10, len(ids))
    x = rng.standard_normal((len(ids), 64), dtype=np.float32)
    rows = gen.encode_examples(ids, labels, x)
    for i in range(len(ids)):
        expected = make_example({"x": x[i], "label": int(labels[i]), "id": int(ids[i])})
        assert rows[i].tobytes() == expected


def test_tfrecord_frames_are_the_bytes_tensorflow_writes(tmp_path):
    import tensorflow as tf

    ids, labels, x = gen.file_examples(gen.Plan(1000, 1, 1, "2026-10-01", 3), 0)
    rows = gen.encode_examples(ids[200:], labels[200:], x[200:])  # ids 200..999: two-byte varints
    path = tmp_path / "reference.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            writer.write(row.tobytes())
    assert gen.tfrecord_frames(rows) == path.read_bytes()
    assert gen.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_counts_layout_parse_and_determinism(tmp_path):
    out = tmp_path / "data"
    generate(
        out, "--examples", "2500", "--days", "3", "--files-per-day", "2", "--seed", "5", "--processes", "2"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".generator.json",
        *(f"dt=2026-10-0{d}" for d in (1, 2, 3)),
    ]
    for partition in out.glob("dt=*"):
        assert sorted(f.name for f in partition.iterdir()) == ["part-00000.tfrecord", "part-00001.tfrecord"]
    assert gen.read_manifest(out)["examples"] == 2500

    raw = yaml.safe_load(EXAMPLE_YAML.read_text())
    raw["data"]["location"] = str(out)
    raw["storage"] = {"export_root": str(tmp_path / "e"), "serving_root": str(tmp_path / "s")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    config = load_pipeline_config(tmp_path / "p.yaml")
    window = data_window(config.data, AS_OF)
    assert window.records == 2500 and len(window.files) == 6 and window.partitions[0] == "dt=2026-10-01"

    seen_ids, train = [], 0
    for split in ("train", "eval"):
        for features, label, parsed in input_dataset(config, window.files, split, batch_size=100, count=True):
            assert features["x"].shape[1:] == (64,)
            assert label.numpy().min() >= 0 and label.numpy().max() <= 9
            train += len(label) if split == "train" else 0
            seen_ids.append(int(parsed))
    assert sum(seen_ids) == 2 * 2500 and 0 < train < 2500

    # unique ids 0..N-1, in file order
    import tensorflow as tf

    spec = {"id": tf.io.FixedLenFeature([], tf.int64)}
    ids = [int(i) for batch in tf.data.TFRecordDataset(list(window.files)).batch(1000)
           for i in tf.io.parse_example(batch, spec)["id"].numpy()]  # fmt: skip
    assert ids == list(range(2500))

    # the same seed, one process: the same bytes; another seed: other bytes
    again = tmp_path / "again"
    generate(
        again, "--examples", "2500", "--days", "3", "--files-per-day", "2", "--seed", "5", "--processes", "1"
    )
    assert digest(again) == digest(out)
    generate(again, "--examples", "2500", "--days", "3", "--files-per-day", "2", "--seed", "6")
    assert digest(again) != digest(out)


def test_if_missing_reuses_the_same_data_and_rewrites_other_data(tmp_path):
    out = tmp_path / "data"
    args = ["--examples", "300", "--days", "2", "--files-per-day", "1", "--processes", "1"]
    generate(out, *args)
    first = digest(out)
    assert "already holds" in generate(out, *args, "--if-missing")
    generate(out, "--examples", "300", "--days", "1", "--processes", "1", "--if-missing")
    assert sorted(p.name for p in out.glob("dt=*")) == ["dt=2026-10-01"] and digest(out) != first


def test_the_data_is_learnable():
    """Class means far enough apart for the noise: a nearest-mean classifier is mostly right."""
    plan = gen.Plan(5000, 1, 1, "2026-10-01", 0)
    _, labels, x = gen.file_examples(plan, 0)
    means = gen.class_means(0)
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert 0.8 < (nearest == labels).mean() < 0.99
