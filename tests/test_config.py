"""Pipeline YAML loading: the example is valid, and every kind of bad input names file and key."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from include.config import (
    DEFAULT_PIPELINES_DIR,
    MODEL_TENSORS,
    PROJECT_ROOT,
    PipelineConfig,
    SignatureSpec,
    find_pipeline,
    iter_pipeline_files,
    load_pipeline_config,
    parse_pipeline_config,
)
from include.config.__main__ import main as schema_main
from include.errors import ConfigError
from tests.helpers import EXAMPLE_YAML, diabetes_raw, example_raw, write_pipeline

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
    ("model.num_features", 64, "model.num_features: unknown key"),
    ("model.head", "ranking", "model.head: expected one of ['classification', 'regression']"),
    ("model.num_classes", DELETE, "model.num_classes: required for head 'classification'"),
    ("model.class_names", list("aaaaaaaaaa"), "model.class_names: expected each name once"),
    ("name", "savedmodel_promote", "name: 'savedmodel_promote' is the DAG id of the project's own DAG"),
    ("name", "savedmodel_asset_consumer", "name: 'savedmodel_asset_consumer' is the DAG id of the project's"),
    ("data.feature_key", "x", "data.feature_key: unknown key"),
    ("data.id_dtype", "float32", "data.id_dtype: expected one of ['int64', 'string']"),
    ("data.id_key", "an id", "data.id_key: expected a feature name"),
    ("features", {}, "features: expected at least one feature"),
    ("features", {"bad-name": {"dtype": "float32"}}, "features: expected a feature name"),
    ("features.x.dtype", "float64", "features.x.dtype: expected one of ['float32', 'int64', 'string']"),
    ("features.x.shape", [0], "features.x.shape[0]: expected a value >= 1, got 0"),
    ("features.x.shape", 64, "features.x.shape: expected a list, got int 64"),
    ("features.x.default", "zero", "features.x.default: expected a float32 value, got str 'zero'"),
    ("features.x.vocabulary", ["a"], "features.x.vocabulary: expected only on a string feature"),
    ("features.x.extra", 1, "features.x.extra: unknown key"),
    ("label.type", "category", "label.type: expected one of ['class_index', 'class_name', 'float']"),
    ("label.key", "id", "label.key: expected a key other than data.id_key 'id'"),
    ("training.shuffle_buffer", 0, "training.shuffle_buffer: expected a value >= 1, got 0"),
    ("training.deterministic", "yes", "training.deterministic: expected true or false"),
    ("training.epochs", 0, "training.epochs: expected a value >= 1, got 0"),
    ("quality.max_loss_increase", -1, "quality.max_loss_increase: expected a value >= 0, got -1"),
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
        "signatures.sig.inputs.pixels.tensor: expected a model tensor or feature (no feature is named "
        "'pixels'; features: ['x'])",
    ),
    (
        {
            "method": "predict",
            "inputs": {"x": {"dtype": "float32"}},
            "outputs": {"p": {"dtype": "float32", "tensor": "probs"}},
        },
        "signatures.sig.outputs.p.tensor: expected a model tensor (examples, logits, scores, top_scores, "
        "top_classes, predictions) or features.<name>, got str 'probs'",
    ),
    (
        {
            "method": "predict",
            "inputs": {"x": {"dtype": "float32"}},
            "outputs": {"p": {"dtype": "float32", "tensor": "features.x"}},
        },
        "signatures.sig.outputs.p.tensor: expected one of ['logits', 'scores', 'top_scores', 'top_classes'] "
        "(head 'classification'), got 'features.x'",
    ),
    (
        {"method": "predict", "inputs": {"x": {"dtype": "float32", "tensor": "scores"}}, "outputs": {}},
        "signatures.sig.inputs.x.tensor: expected examples or features.<name>, got 'scores'",
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
    raw["signatures"]["predict_logits"] = {
        "method": "predict",
        "inputs": {"x": {"dtype": "float32"}},
        "outputs": {"logits": {"dtype": "float32"}},
    }
    signatures = parse_pipeline_config(raw).signatures
    assert signatures["predict_images"].tensor_of("inputs", "images") == "features.x"
    assert signatures["serving_default"].tensor_of("inputs", "inputs") == "examples"
    assert signatures["serving_default"].tensor_of("outputs", "classes") == "top_classes"
    assert signatures["serving_default"].tensor_of("outputs", "scores") == "top_scores"
    assert signatures["predict_logits"].tensor_of("inputs", "x") == "features.x"
    assert signatures["predict_logits"].tensor_of("outputs", "logits") == "logits"
    regress = SignatureSpec.model_validate(
        {
            "method": "regress",
            "inputs": {"inputs": {"dtype": "string"}},
            "outputs": {"outputs": {"dtype": "float32"}},
        }
    )
    assert regress.tensor_of("inputs", "inputs") == "examples"
    assert regress.tensor_of("outputs", "outputs") == "predictions"
    assert "examples" in MODEL_TENSORS and "predictions" in MODEL_TENSORS


# --- features, label, head and signatures checked against each other --------------------------

CLASSIFY_ON_REGRESSION = {
    "method": "classify",
    "inputs": {"inputs": {"dtype": "string"}},
    "outputs": {"classes": {"dtype": "string"}},
}

#: (base YAML, dotted key, new value, every fragment the ConfigError must hold)
CROSS_CHECKS = [
    (
        diabetes_raw,
        "model.num_classes",
        3,
        ["model.num_classes: expected nothing for head 'regression' (one float output)"],
    ),
    (
        diabetes_raw,
        "signatures.classes",
        CLASSIFY_ON_REGRESSION,
        [
            "signatures.classes.method: expected predict or a method of head 'regression', got 'classify'",
            "signatures.classes.outputs.classes.tensor: expected one of ['predictions'] (head 'regression')",
        ],
    ),
    (
        diabetes_raw,
        "label.type",
        "class_index",
        ["label.type: expected 'float' for head 'regression', got 'class_index'"],
    ),
    (
        diabetes_raw,
        "quality.min_accuracy",
        0.5,
        ["quality.min_accuracy: expected 0 for head 'regression' (no accuracy)"],
    ),
    (
        example_raw,
        "label.type",
        "float",
        ["label.type: expected 'class_index' or 'class_name' for head 'classification', got 'float'"],
    ),
    (
        example_raw,
        "label.type",
        "class_name",
        ["model.class_names: required for label.type 'class_name'"],
    ),
    (
        example_raw,
        "features.x",
        {"dtype": "string", "shape": [64]},
        ["features.x.vocabulary: required for a string feature of the built-in 'softmax' builder"],
    ),
    (
        example_raw,
        "features.extra",
        {"dtype": "float32"},
        [
            "signatures.predict_images.inputs: expected either one 'examples' input or every feature "
            "(['x', 'extra']), got ['features.x']"
        ],
    ),
    (
        diabetes_raw,
        "signatures.predict_progression.inputs.s6",
        DELETE,
        ["signatures.predict_progression.inputs: expected either one 'examples' input or every feature"],
    ),
    (
        example_raw,
        "signatures.predict_images.inputs.images.tensor",
        "features.nope",
        [
            "signatures.predict_images.inputs.images.tensor: expected a model tensor or feature "
            "(no feature is named 'nope'; features: ['x'])"
        ],
    ),
    (
        example_raw,
        "features.label",
        {"dtype": "int64"},
        ["features.label: expected a name other than the label and id keys"],
    ),
    (
        example_raw,
        "training.epochs",
        3,
        ["training.steps: expected exactly one of steps and epochs, got both"],
    ),
    (
        example_raw,
        "training.steps",
        DELETE,
        ["training.steps: expected exactly one of steps and epochs, got neither"],
    ),
]


@pytest.mark.parametrize(
    ("base", "key", "value", "expected"),
    CROSS_CHECKS,
    ids=[f"{b.__name__[:-4]}:{k}={'DELETE' if v is DELETE else v!r}"[:60] for b, k, v, _ in CROSS_CHECKS],
)
def test_cross_checks_name_the_dotted_key(tmp_path, base, key, value, expected):
    """Head, label, features and signatures that contradict each other are a ConfigError at the dotted key."""
    assert_config_error(write_pipeline(tmp_path, _set(base(), key, value), "bad.yaml"), *expected)


def test_the_regression_example_is_valid_and_a_user_builder_needs_no_vocabulary(tmp_path):
    """diabetes_keras loads (regress, predict of every feature); only a built-in needs a vocabulary."""
    config = load_pipeline_config(write_pipeline(tmp_path, diabetes_raw(), "diabetes.yaml"))
    assert config.model.head == "regression" and config.label.type == "float"
    assert config.model.num_classes is None and config.training.epochs == 60 and config.training.steps is None
    assert config.features["s6"].default == 91.26 and config.features["sex"].vocabulary == ("F", "M")
    predict = config.signatures["predict_progression"]
    assert predict.tensor_of("inputs", "sex") == "features.sex"
    assert predict.tensor_of("outputs", "progression") == "predictions"
    no_vocabulary = _set(diabetes_raw(), "features.sex.vocabulary", DELETE)
    load_pipeline_config(write_pipeline(tmp_path, no_vocabulary, "keras.yaml"))
    as_mlp = _set(no_vocabulary, "model.builder", "mlp")
    assert_config_error(
        write_pipeline(tmp_path, as_mlp, "mlp.yaml"),
        "features.sex.vocabulary: required for a string feature of the built-in 'mlp' builder",
    )


def test_a_predict_signature_may_take_the_serialized_examples():
    """A predict signature fed by one `examples` input is valid (it need not list every feature)."""
    raw = _set(
        example_raw(),
        "signatures.logits",
        {
            "method": "predict",
            "inputs": {"examples": {"dtype": "string"}},
            "outputs": {"logits": {"dtype": "float32"}},
        },
    )
    assert parse_pipeline_config(raw).signatures["logits"].tensor_of("inputs", "examples") == "examples"


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
    assert schema_main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == PipelineConfig.model_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == printed, (
        "docs/pipeline.schema.json is out of date; regenerate it with\n"
        "  .venv/bin/python -m include.config schema > docs/pipeline.schema.json"
    )


@pytest.mark.parametrize("raw", [example_raw, diabetes_raw], ids=["digits_softmax", "diabetes_keras"])
def test_example_yaml_is_valid_against_the_schema(raw):
    """The JSON Schema editors use accepts each example YAML as written (dates are strings to an editor)."""
    jsonschema = pytest.importorskip("jsonschema")
    assert (
        (DEFAULT_PIPELINES_DIR / f"{raw()['name']}.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=../../docs/pipeline.schema.json")
    )
    as_written = json.loads(json.dumps(raw(), default=str))
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(as_written)
