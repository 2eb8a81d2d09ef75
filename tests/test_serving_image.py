"""The TF Serving image docker-compose.yml pins reads what the project exports: its TensorFlow's C API says.

`tensorflow/serving:X.Y.Z` is built on TensorFlow X.Y; the project exports with requirements.txt's
TensorFlow. tools/check_serving_image.py loads an export through the C API of the
tensorflow-cpu==X.Y.Z wheel (TF_LoadSessionFromSavedModel, tag `serve`) in a side environment,
build/serving-tf-X.Y.Z/, created on the first run on a machine (from PyPI: no network there, and
this test fails) and reused after. Both example pipelines are trained and exported with the
project's own code; every signature answers its warmup request through that C API exactly as
it does through the project's TensorFlow.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from include.config import PROJECT_ROOT
from tests.test_example_pipelines import exported_example
from tools.check_serving_image import (
    c_api_library,
    main,
    run_signature,
    serving_image,
    side_env,
    tensorflow_version,
    warmup_feeds,
)
from tools.example_data import EXAMPLE_PIPELINES

RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"


@pytest.fixture(scope="module")
def serving_tf() -> tuple[str, Path]:
    """Returns (the TensorFlow version of the compose file's TF Serving image, its side environment)."""
    version = tensorflow_version(serving_image())
    started = time.monotonic()
    env = side_env(version)  # raises, so the test fails, when the wheel cannot be installed
    print(f"side environment {env}: {time.monotonic() - started:.1f} s")
    return version, env


@pytest.fixture(scope="module", params=EXAMPLE_PIPELINES)
def example_export(request, tmp_path_factory):
    """Returns (pipeline name, export dir) of an example pipeline trained and exported like a run."""
    _, export_dir, _ = exported_example(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, export_dir


def answer_here(export_dir, signature: str, feeds: dict) -> tuple[str, dict]:
    """Returns (method name, {output: array}) of a signature run by this venv's TensorFlow, in a Session."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        meta = v1.saved_model.loader.load(sess, [v1.saved_model.tag_constants.SERVING], str(export_dir))
        definition = meta.signature_def[signature]
        feed_dict = {definition.inputs[key].name: value for key, value in feeds.items()}
        fetches = {key: info.name for key, info in definition.outputs.items()}
        return definition.method_name, sess.run(fetches, feed_dict=feed_dict)


def meta_signatures(export_dir) -> list[str]:
    """Returns the signature keys of an export, as this venv's TensorFlow reads them."""
    from tensorflow.python.tools import saved_model_utils

    return list(saved_model_utils.get_meta_graph_def(str(export_dir), "serve").signature_def)


def test_the_serving_image_is_a_pinned_release_the_runbook_names():
    """The compose file pins tensorflow/serving:X.Y.Z; every tag the runbook gives is that one."""
    image = serving_image()
    assert tensorflow_version(image)
    tags = re.findall(r"tensorflow/serving:[\w.\-]+", RUNBOOK.read_text())
    assert tags and set(tags) == {image}, tags


def test_the_serving_images_tensorflow_answers_every_signature_like_ours(serving_tf, example_export):
    """TF_LoadSessionFromSavedModel of the image's TensorFlow loads the export; each signature's
    warmup request gets the outputs this venv's TensorFlow gives (strings equal, numbers within 1e-5)."""
    version, env = serving_tf
    name, export_dir = example_export
    signatures = sorted(meta_signatures(export_dir))
    assert "serving_default" in signatures, name
    for signature in signatures:
        feeds = warmup_feeds(export_dir, signature)
        run = run_signature(env, export_dir, signature, feeds)
        method, expected = answer_here(export_dir, signature, feeds)
        assert (run.tf_version, run.method_name) == (version, method), (name, signature)
        assert set(run.outputs) == set(expected), (name, signature)
        for key, value in expected.items():
            got, where = run.outputs[key], f"{name} {signature} {key}"
            assert got.shape == value.shape, where
            if value.dtype == object:
                assert got.tolist() == value.tolist(), where
            else:
                assert got.dtype == value.dtype, where
                np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=where)


def test_the_cli_prints_what_serving_default_answers(serving_tf, tmp_path_factory, capsys):
    """`python -m tools.check_serving_image DIR` prints the image, its TensorFlow and the outputs."""
    version, env = serving_tf
    _, export_dir, _ = exported_example("digits_softmax", tmp_path_factory.mktemp("cli"))
    assert main([str(export_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{serving_image()}: TensorFlow {version}'s C API ({c_api_library(env)})" in out
    assert "ran serving_default (tensorflow/serving/classify)" in out
    assert "classes string[8, 10]:" in out and "scores float32[8, 10]:" in out
