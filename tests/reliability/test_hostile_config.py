"""Hostile pipeline YAML: a corpus of malformed files and fuzzing; always ConfigError, never code."""

from __future__ import annotations

import copy
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.config import load_all_pipelines, load_pipeline_config, parse_pipeline_config
from include.errors import ConfigError
from tests.helpers import example_raw, write_pipeline

BASE = example_raw()


def mutated(path: str, value) -> dict:
    """Returns the example YAML with the dotted key set to value."""
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


# (key path, value): every one must be refused with a message naming that key path.
CORPUS = [
    ("name", None),
    ("name", ""),
    ("name", "a" * 65),
    ("name", "../../etc"),
    ("name", "/abs"),
    ("name", "naïve"),
    ("name", "名前"),
    ("name", "drop table;"),
    ("name", ["list"]),
    ("name", {"a": 1}),
    ("name", 10**400),
    ("start_date", "2026-13-45"),
    ("start_date", 20261001),
    ("catchup", 1),
    ("catchup", "false"),
    ("retries", 1.5),
    ("retries", 10**30),
    ("retries", -(10**30)),
    ("retry_delay_minutes", "5m"),
    ("schedule", 5),
    ("schedule", "* * *"),
    ("schedule", "@never"),
    ("schedule", "$(rm -rf /)"),
    ("tags", [1, 2]),
    ("tags", [""]),
    ("tags", ["x" * 101]),
    ("owner", 7),
    ("data.location", "../../etc/passwd"),
    ("data.location", "/tmp/../etc"),
    ("data.location", "a\0b"),
    ("data.location", ""),
    ("data.location", ["/tmp"]),
    ("data.window_days", -1),
    ("data.window_days", 10**12),
    ("data.eval_percent", 0),
    ("data.format", "pickle"),
    ("model.name", "../serving"),
    ("model.name", "Model"),
    ("model.builder", "__import__('os')"),
    ("model.builder", "os.system('id')"),
    ("model.builder", ""),
    ("model.builder", "a b:c"),
    ("model.num_features", 64),
    ("model.head", None),
    ("model.head", "eval('1')"),
    ("features", []),
    ("features", {}),
    ("features", {"../x": {"dtype": "float32"}}),
    ("features.x", None),
    ("features.x.dtype", "object"),
    ("features.x.shape", [-1]),
    ("features.x.shape", [10**9]),
    ("features.x.shape", [2] * 40),
    ("features.x.default", [1.0, 2.0]),
    ("features.x.default", float("nan")),
    ("features.x.vocabulary", []),
    ("label.type", "__import__('os')"),
    ("label.key", "../label"),
    ("label.key", "id"),
    ("data.id_key", "a;b"),
    ("data.id_dtype", "float32"),
    ("data.feature_key", "x"),
    ("training.epochs", float("inf")),
    ("training.epochs", 10**100),
    ("training.shuffle_buffer", -1),
    ("training.deterministic", "no"),
    ("quality.max_loss_increase", float("nan")),
    ("model.num_classes", True),
    ("model.class_names", "abc"),
    ("model.hidden_units", [-1]),
    ("training.steps", float("inf")),
    ("training.steps", "1e9"),
    ("training.learning_rate", float("nan")),
    ("training.learning_rate", float("inf")),
    ("training.learning_rate", -0.1),
    ("training.batch_size", 0),
    ("training.seed", 2**40),
    ("training.optimizer", None),
    ("quality.min_accuracy", -0.5),
    ("quality.max_accuracy_drop", 2),
    ("signatures.predict_images.method", "exec"),
    ("signatures.predict_images.inputs", []),
    ("signatures.predict_images.inputs.images.shape", [-1] * 40),
    ("signatures.predict_images.inputs.images.shape", [-2]),
    ("signatures.predict_images.inputs.images.dtype", "object"),
    ("signatures.predict_images.inputs.images.tensor", "__import__('os')"),
    ("signatures.predict_images.inputs.images.tensor", "features.__class__"),
    ("signatures.predict_images.inputs.images.tensor", "features.x.y"),
    ("signatures.predict_images.outputs.scores.tensor", ["scores"]),
    ("signatures.serving_default.method", "regress"),
    ("storage.serving_root", "../../../tmp"),
    ("storage.export_root", {"nested": 1}),
    ("operations.training_pool", "pool with spaces"),
    ("operations.training_queue", "queue;rm -rf"),
    ("operations.sensor_mode", "busy-wait"),
    ("serving.keep_versions", 0),
    ("serving.version_policy", "newest"),
    ("unknown_top_level", 1),
    ("data.unknown", 1),
    ("signatures.predict_images.extra", 1),
]


@pytest.mark.parametrize(("key", "value"), CORPUS, ids=[f"{k}={v!r}"[:50] for k, v in CORPUS])
def test_malformed_value_is_a_config_error_naming_file_and_key(tmp_path, key, value):
    """Each malformed value fails as ConfigError with the file path and the key path in the message."""
    path = write_pipeline(tmp_path, mutated(key, value), "hostile.yaml")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    message = str(info.value)
    assert str(path) in message
    assert key.split(".")[0] in message


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "name: !!python/object/apply:os.system ['touch {marker}']",
        "name: !!python/name:os.system",
        "name: !!binary aGVsbG8=",
        "a: &a [*a]",
        "a: &a ['x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\ntags: [*e,*e,*e,*e,*e,*e]",
        "\x00\x01\x02",
        "name: 'unterminated",
        "%YAML 9.9\n---\nname: x",
    ],
    ids=[
        "python tag",
        "python tag in value",
        "python name",
        "binary",
        "recursive alias",
        "alias bomb",
        "binary garbage",
        "unterminated",
        "bad directive",
    ],
)
def test_yaml_tricks_never_execute_and_end_in_config_error(tmp_path, text):
    """Python tags, alias bombs and garbage give ConfigError, run nothing, and return quickly."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.yaml"
    path.write_text(text.replace("{marker}", str(marker)))
    with pytest.raises(ConfigError):
        load_pipeline_config(path)
    assert not marker.exists()


def test_oversized_file_is_refused(tmp_path):
    """A file over 1 MB is refused before parsing."""
    path = tmp_path / "huge.yaml"
    path.write_text("description: " + "x" * 1_100_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_pipeline_config(path)


def test_duplicate_names_across_files_keep_one_and_refuse_the_other_loudly(tmp_path):
    """Of two files with one name one keeps it; the other is a ConfigError naming both, never silent."""
    write_pipeline(tmp_path, BASE, "one.yaml")
    write_pipeline(tmp_path, BASE, "two.yaml")
    configs, errors = load_all_pipelines(tmp_path)
    assert len(configs) == 1 and len(errors) == 1
    assert {str(configs[0].source_path), errors[0].path} == {
        str(tmp_path / "one.yaml"),
        str(tmp_path / "two.yaml"),
    }
    assert str(configs[0].source_path) in str(errors[0])


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.dates().map(str),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(string.ascii_lowercase, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=yaml_values)
def test_fuzzed_documents_only_raise_config_error(document):
    """Any YAML-shaped document either loads or raises ConfigError, never another exception."""
    try:
        parse_pipeline_config(document, source="fuzz.yaml")
    except ConfigError as err:
        assert "fuzz.yaml" in str(err)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(
        sorted({k for k, _ in CORPUS} | {"data.window_days", "training.steps", "model.name"})
    ),
    value=yaml_values,
)
def test_fuzzed_values_in_the_example_only_raise_config_error(key, value):
    """Replacing any one value of the valid example with arbitrary YAML never crashes the loader."""
    try:
        parse_pipeline_config(mutated(key, value), source="fuzz.yaml")
    except ConfigError as err:
        assert "fuzz.yaml" in str(err)


def test_only_an_explicit_builder_path_is_imported(tmp_path, monkeypatch):
    """model.builder 'package.module:function' is the one import a YAML can cause, and only at build time."""
    import sys

    raw = mutated("model.builder", "tests.reliability.not_a_module:fn")
    config = load_pipeline_config(write_pipeline(tmp_path, raw, "builder.yaml"))
    assert "tests.reliability.not_a_module" not in sys.modules  # loading imported nothing
    from include.train.model import resolve_builder

    with pytest.raises(ConfigError, match=r"model\.builder: cannot import"):
        resolve_builder(config)
    assert Path(config.source_path).name == "builder.yaml"
