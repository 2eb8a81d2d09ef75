"""Pipeline YAML loading: the example is valid, and every kind of bad input names file and key."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from include import config as config_module
from include.config import (
    MODEL_TENSORS,
    PROJECT_ROOT,
    PipelineConfig,
    find_pipeline,
    iter_pipeline_files,
    load_all_pipelines,
    load_pipeline_config,
    parse_pipeline_config,
)
from include.errors import ConfigError
from tests.helpers import EXAMPLE_YAML, example_raw, write_pipeline

SCHEMA_FILE = PROJECT_ROOT / "docs" / "pipeline.schema.json"


def assert_config_error(path: Path, *fragments: str) -> ConfigError:
    """Asserts loading `path` fails with a ConfigError whose message holds every fragment."""
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    message = str(info.value)
    assert str(path.resolve()) in message or str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return info.value


def test_example_pipeline_is_valid():
    """The shipped example loads into a frozen config with paths resolved against the project."""
    config = load_pipeline_config(EXAMPLE_YAML)
    assert config.name == "digits_softmax"
    assert config.start_date == dt.date(2026, 10, 5)
    assert config.data.location == PROJECT_ROOT / "data" / "digits"
    assert config.storage.serving_root.is_absolute()
    assert set(config.signatures) == {"predict_images", "serving_default"}
    assert config.signatures["serving_default"].inputs["inputs"].shape == (-1,)
    with pytest.raises(ValidationError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def _set(raw: dict, dotted: str, value) -> dict:
    """Returns a copy of raw with the dotted key set (or deleted when value is DELETE)."""
    raw = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


DELETE = object()

BAD_VALUES = [
    ("name", "Digits-Softmax", "name: expected lowercase letters"),
    ("name", "../escape", "name: expected lowercase letters"),
    ("name", "ünïcode", "name: expected lowercase letters"),
    ("name", 12, "name: expected a string, got int 12"),
    ("name", DELETE, "name: required key is missing"),
    ("start_date", "yesterday", "start_date: expected a date YYYY-MM-DD"),
    ("catchup", "yes", "catchup: expected true or false"),
    ("retries", True, "retries: expected an integer, got bool"),
    ("retries", -1, "retries: expected a value >= 0, got -1"),
    ("retries", 10**30, "retries: expected a value <= 20"),
    ("tags", "tensorflow", "tags: expected a list"),
    ("schedule", "every day", "schedule: expected a 5-field cron expression"),
    ("schedule", "@sometimes", "schedule: expected one of"),
    ("surprise", 1, "surprise: unknown key"),
    ("data", [], "data: expected a mapping, got list"),
    ("data.location", "", "data.location: expected a non-empty path string"),
    ("data.location", DELETE, "data.location: required key is missing"),
    ("data.format", "csv", "data.format: expected one of ['tfrecord']"),
    ("data.window_days", 0, "data.window_days: expected a value >= 1, got 0"),
    ("data.eval_percent", 90, "data.eval_percent: expected a value <= 50"),
    ("data.extra", True, "data.extra: unknown key"),
    ("model.name", "Bad Name", "model.name: expected lowercase letters"),
    ("model.builder", "os.system", "model.builder: expected 'softmax', 'mlp' or 'package.module:function'"),
    ("model.num_classes", 1, "model.num_classes: expected a value >= 2"),
    ("model.num_features", "64", "model.num_features: expected an integer, got str"),
    ("model.class_names", ["a", "b"], "model.class_names: expected 10 names"),
    ("training.steps", 0, "training.steps: expected a value >= 1, got 0"),
    ("training.steps", 2.5, "training.steps: expected an integer, got float"),
    ("training.learning_rate", 0, "training.learning_rate: expected a value > 0, got 0"),
    ("training.learning_rate", ".nan", "training.learning_rate: expected a number, got str"),
    ("training.optimizer", "rmsprop", "training.optimizer: expected one of ['sgd', 'adam']"),
    ("training.batch_size", None, "training.batch_size: expected an integer, got NoneType"),
    ("quality.min_accuracy", 1.5, "quality.min_accuracy: expected a value <= 1"),
    ("signatures", {}, "signatures: expected at least one signature"),
    ("signatures.predict_images.method", "guess", "signatures.predict_images.method: expected one of"),
    (
        "signatures.predict_images.inputs.images.dtype",
        "float",
        "signatures.predict_images.inputs.images.dtype",
    ),
    (
        "signatures.predict_images.inputs.images.shape",
        [-1, "64"],
        "inputs.images.shape: expected a list of dimension",
    ),
    ("signatures.predict_images.outputs", None, "signatures.predict_images.outputs: expected a mapping"),
    ("storage.serving_root", DELETE, "storage.serving_root: required key is missing"),
    ("storage.export_root", 5, "storage.export_root: expected a non-empty path string"),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"), BAD_VALUES, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_VALUES]
)
def test_bad_value_names_key_and_expectation(tmp_path, key, value, expected):
    """Each bad value fails with the file path, the dotted key and what was expected."""
    path = write_pipeline(tmp_path, _set(example_raw(), key, value), "bad.yaml")
    assert_config_error(path, expected)


def test_all_problems_are_reported_at_once(tmp_path):
    """A file with several problems lists every one of them, not just the first."""
    raw = _set(_set(example_raw(), "retries", "many"), "training.steps", -5)
    error = assert_config_error(write_pipeline(tmp_path, raw, "bad.yaml"), "retries:", "training.steps:")
    assert len(error.problems) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("- just\n- a list\n", "<top level>: expected a mapping, got list"),
        ("", "<top level>: expected a mapping, got NoneType"),
    ],
)
def test_unparseable_or_unsafe_yaml(tmp_path, text, expected):
    """Syntax errors, Python tags, duplicate keys and non-mappings are ConfigErrors, never executed."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_config_error(path, expected)


def test_export_and_serving_roots_must_differ(tmp_path):
    """Using one directory for both roots would let TF Serving see run scratch dirs."""
    raw = example_raw()
    raw["storage"] = {"export_root": "/tmp/same", "serving_root": "/tmp/same"}
    assert_config_error(write_pipeline(tmp_path, raw, "bad.yaml"), "export_root and serving_root")


def test_duplicate_pipeline_names_reject_both_files(tmp_path):
    """Two files claiming one pipeline name are both reported; other pipelines stay valid."""
    write_pipeline(tmp_path, example_raw(), "a.yaml")
    write_pipeline(tmp_path, example_raw(), "b.yaml")
    write_pipeline(tmp_path, _set(example_raw(), "name", "other"), "c.yaml")
    configs, errors = load_all_pipelines(tmp_path)
    assert [c.name for c in configs] == ["other"]
    assert sorted(Path(e.path).name for e in errors) == ["a.yaml", "b.yaml"]
    assert all("also used by" in str(e) for e in errors)


def test_pipelines_dir_lists_only_yaml_files(tmp_path, monkeypatch):
    """The loader reads *.yaml and *.yml from SAVEDMODEL_PIPELINES_DIR, sorted, nothing else."""
    for name in ("b.yaml", "a.yml", "notes.txt"):
        (tmp_path / name).write_text("x: 1")
    monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(tmp_path))
    assert [p.name for p in iter_pipeline_files()] == ["a.yml", "b.yaml"]


# --- signatures: what TF Serving's APIs require, and the model tensor of each input and output ----

CLASSIFY = {
    "method": "classify",
    "inputs": {"inputs": {"dtype": "string", "shape": [-1]}},
    "outputs": {"classes": {"dtype": "string"}, "scores": {"dtype": "float32"}},
}
SIGNATURE_PROBLEMS = [
    (
        {**CLASSIFY, "inputs": {"images": {"dtype": "string"}}},
        "signatures.sig.inputs: expected one input named 'inputs' (TF Serving's classify API), got ['im",
    ),
    (
        {**CLASSIFY, "inputs": {"inputs": {"dtype": "float32"}}},
        "signatures.sig.inputs.inputs.dtype: expected 'string' (TF Serving's classify API), got 'float32'",
    ),
    (
        {**CLASSIFY, "outputs": {"probabilities": {"dtype": "float32"}}},
        "signatures.sig.outputs: expected one or more of ['classes', 'scores'] (TF Serving's classify API)",
    ),
    (
        {**CLASSIFY, "method": "regress"},
        "signatures.sig.outputs: expected one output named 'outputs' (TF Serving's regress API)",
    ),
    (
        {"method": "predict", "inputs": {"pixels": {"dtype": "float32"}}, "outputs": {}},
        "signatures.sig.inputs.pixels.tensor: required (no model tensor is named 'pixels'; expected one of [",
    ),
    (
        {"method": "predict", "inputs": {}, "outputs": {"p": {"dtype": "float32", "tensor": "probs"}}},
        "signatures.sig.outputs.p.tensor: expected one of ['examples', 'features', 'logits', 'scores', "
        "'top_scores', 'top_classes'], got str 'probs'",
    ),
]


@pytest.mark.parametrize(
    ("signature", "expected"), SIGNATURE_PROBLEMS, ids=[e[:40] for _, e in SIGNATURE_PROBLEMS]
)
def test_signature_problems_name_the_key(tmp_path, signature, expected):
    """A signature TF Serving would refuse, or a name with no model tensor, is a problem at its key."""
    raw = _set(example_raw(), "signatures", {"sig": signature})
    assert_config_error(write_pipeline(tmp_path, raw, "bad.yaml"), expected)


def test_tensor_of_gives_the_declared_or_default_model_tensor():
    """tensor_of returns `tensor:` where given, else TF Serving's default or the same-named model tensor."""
    raw = example_raw()
    raw["signatures"]["regress"] = {
        "method": "regress",
        "inputs": {"inputs": {"dtype": "string"}},
        "outputs": {"outputs": {"dtype": "float32"}},
    }
    raw["signatures"]["predict_logits"] = {
        "method": "predict",
        "inputs": {},
        "outputs": {"logits": {"dtype": "float32"}},
    }
    signatures = parse_pipeline_config(raw).signatures
    assert signatures["predict_images"].tensor_of("inputs", "images") == "features"
    assert signatures["serving_default"].tensor_of("inputs", "inputs") == "examples"
    assert signatures["serving_default"].tensor_of("outputs", "classes") == "top_classes"
    assert signatures["serving_default"].tensor_of("outputs", "scores") == "top_scores"
    assert signatures["regress"].tensor_of("outputs", "outputs") == "scores"
    assert signatures["predict_logits"].tensor_of("outputs", "logits") == "logits"
    assert "examples" in MODEL_TENSORS


# --- finding a pipeline, copies, the JSON Schema ----------------------------------------------------


def test_find_pipeline_by_name_or_model_name(tmp_path):
    """find_pipeline finds a valid pipeline by its name or its model's name."""
    write_pipeline(tmp_path, example_raw(), "digits.yaml")
    assert find_pipeline("digits_softmax", tmp_path).name == "digits_softmax"
    assert find_pipeline("digits", tmp_path).name == "digits_softmax"


def test_find_pipeline_names_the_known_pipelines_and_invalid_files(tmp_path):
    """An unknown name is a ConfigError listing the valid pipelines and the invalid files."""
    write_pipeline(tmp_path, example_raw(), "digits.yaml")
    write_pipeline(tmp_path, _set(example_raw(), "name", "Broken"), "broken.yaml")
    with pytest.raises(ConfigError) as info:
        find_pipeline("other", tmp_path)
    assert "no valid pipeline or model is named 'other'" in str(info.value)
    assert "digits_softmax (model digits)" in str(info.value)
    assert "invalid files: broken.yaml" in str(info.value)


def test_model_copy_keeps_the_source_file():
    """A copy with changed values (model_copy) still knows which YAML file it came from."""
    config = load_pipeline_config(EXAMPLE_YAML)
    copy_ = config.model_copy(update={"training": config.training.model_copy(update={"steps": 5})})
    assert copy_.training.steps == 5 and config.training.steps == 2000
    assert copy_.source_path == config.source_path == EXAMPLE_YAML.resolve()


def test_schema_file_is_up_to_date(capsys):
    """docs/pipeline.schema.json is what `python -m include.config schema` prints today."""
    assert config_module.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == PipelineConfig.model_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == printed, (
        "docs/pipeline.schema.json is out of date; regenerate it with\n"
        "  .venv/bin/python -m include.config schema > docs/pipeline.schema.json"
    )


def test_example_yaml_is_valid_against_the_schema():
    """The JSON Schema editors use accepts the example YAML as written (dates are strings to an editor)."""
    jsonschema = pytest.importorskip("jsonschema")
    assert EXAMPLE_YAML.read_text().startswith(
        "# yaml-language-server: $schema=../../docs/pipeline.schema.json"
    )
    as_written = json.loads(json.dumps(example_raw(), default=str))
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(as_written)
