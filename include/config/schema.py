"""The pipeline YAML's schema: frozen pydantic models, every rule that involves two keys.

This module is the one place that knows the YAML schema. Its JSON Schema (`python -m
include.config schema`, kept in docs/pipeline.schema.json) lets editors check the YAML as it is typed.
"""

from __future__ import annotations

import datetime as dt
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from include.storage.location import BucketURI, scheme_problem

#: The project root: relative paths in a pipeline YAML are resolved against it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Where the pipeline YAML files live; `SAVEDMODEL_PIPELINES_DIR` overrides it.
DEFAULT_PIPELINES_DIR = PROJECT_ROOT / "include" / "pipelines"

_MAX_CONFIG_BYTES = 1_000_000
#: The DAG ids of dags/savedmodel_promote.py and dags/savedmodel_asset_consumer.py: no pipeline
#: may take them (its DAG would replace theirs).
PROJECT_DAG_IDS = ("savedmodel_promote", "savedmodel_asset_consumer")
_SCHEDULE_PRESETS = ("@daily", "@hourly", "@monthly", "@once", "@weekly", "@yearly")
_CRON_FIELD = r"^[0-9A-Za-z*/,\-?LW#]+$"
_IDENTIFIER = r"^[a-z][a-z0-9_]{0,63}$"
_SIGNATURE_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_BUILDER = r"^(softmax|mlp|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"
_QUEUE_NAME = r"^[A-Za-z0-9_.-]{1,256}$"
_FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_TENSOR = (
    r"^(examples|logits|scores|top_scores|top_classes|predictions|features\.[A-Za-z_][A-Za-z0-9_]{0,63})$"
)

#: What a string matching each pattern looks like, in the words of error messages.
_PATTERN_WORDS = {
    _IDENTIFIER: "lowercase letters, digits and '_' starting with a letter (at most 64)",
    _SIGNATURE_KEY: "a signature key made of letters, digits and '_'",
    _BUILDER: "'softmax', 'mlp' or 'package.module:function'",
    _QUEUE_NAME: "letters, digits, '_', '.' or '-'",
    _FEATURE_NAME: "a feature name made of letters, digits and '_' (at most 64)",
    _TENSOR: "a model tensor (examples, logits, scores, top_scores, top_classes, predictions) "
    "or features.<name>",
}

DType = Literal["float16", "float32", "float64", "int32", "int64", "string", "bool"]
Method = Literal["predict", "classify", "regress"]
Head = Literal["classification", "regression"]

#: The model tensors a signature input or output can map to (`tensor:`), besides `features.<name>`
#: (one declared feature, parsed): `examples` are serialized tf.Example strings (an input); the
#: classification head outputs logits, scores, top_scores and top_classes, the regression head
#: predictions.
MODEL_TENSORS: tuple[str, ...] = ("examples", "logits", "scores", "top_scores", "top_classes", "predictions")

#: The output tensors of each head.
HEAD_TENSORS: dict[str, tuple[str, ...]] = {
    "classification": ("logits", "scores", "top_scores", "top_classes"),
    "regression": ("predictions",),
}

#: TF Serving's classify and regress APIs: {method: {kind: {name: (default model tensor, dtype)}}}.
#: Their requests carry tf.Examples, so the one input is `inputs`, a string tensor.
_SERVING_APIS: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "classify": {
        "inputs": {"inputs": ("examples", "string")},
        "outputs": {"classes": ("top_classes", "string"), "scores": ("top_scores", "float32")},
    },
    "regress": {
        "inputs": {"inputs": ("examples", "string")},
        "outputs": {"outputs": ("predictions", "float32")},
    },
}


def _describe(value: Any) -> str:
    """Returns a short description of a YAML value for error messages."""
    if isinstance(value, tuple):  # a YAML list, already made a tuple by _AsTuple
        value = list(value)
    text = reprlib.repr(value)  # bounded: a YAML alias bomb must not explode the message
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _project_path(value: Any) -> Any:
    """Returns a path string as an absolute Path: `~` expanded, relative ones under PROJECT_ROOT."""
    if isinstance(value, Path):  # configs built in code (tests, model_copy) pass Paths
        value = str(value)
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 4096:
        raise ValueError(f"expected a non-empty path string, got {_describe(value)}")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # `~user` of an unknown user
        raise ValueError(f"expected a path whose '~' can be expanded, got {value!r}") from None
    if ".." in path.parts:
        raise ValueError(f"expected a path without '..' components, got {value!r}")
    return path if path.is_absolute() else PROJECT_ROOT / path


def _iso_date(value: Any) -> Any:
    """Returns a YAML date, datetime or quoted YYYY-MM-DD as a date; other values unchanged, to be refused."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    return value


# A YAML list is read as a tuple, so that configs stay immutable. Length constraints go before it in
# Annotated[...]: after it, pydantic's JSON Schema says maxLength instead of maxItems.
_AsTuple = BeforeValidator(lambda value: tuple(value) if isinstance(value, list) else value)
_ProjectPath = Annotated[Path, BeforeValidator(_project_path)]


def _location(value: Any) -> Any:
    """Returns a `gs://` or `s3://` URI as a BucketURI, a path as `_project_path` does; other schemes fail."""
    if isinstance(value, str) and "://" in value:
        problem = scheme_problem(value)
        if problem:
            raise ValueError(problem)
        return BucketURI(value)
    return _project_path(value)


# A local path (relative to the project) or an object-store URI (include/storage/location.py).
_Location = Annotated[
    Path | BucketURI, PlainValidator(_location), PlainSerializer(str), WithJsonSchema({"type": "string"})
]
# The id of an Airflow connection that holds a bucket's credentials (never the credentials).
_ConnectionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,250}$")]
_Date = Annotated[dt.date, BeforeValidator(_iso_date)]
_Identifier = Annotated[str, Field(pattern=_IDENTIFIER)]
_QueueName = Annotated[str, Field(pattern=_QUEUE_NAME)]
_Dimension = Annotated[int, Field(ge=-1, le=2**31)]


def _refuse(problems: list[tuple[tuple[str, ...], str]], checked: Any) -> ValidationError:
    """Returns a ValidationError of (key path below the checked mapping, "expected ..., got ...") pairs."""
    return ValidationError.from_exception_data(
        type(checked).__name__,
        [
            {"type": "value_error", "loc": loc, "input": checked, "ctx": {"error": ValueError(text)}}
            for loc, text in problems
        ],
    )


class _Section(BaseModel):
    """A mapping of the pipeline YAML: unknown keys, loose types and NaN are refused; frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TensorSpec(_Section):
    """One input or output of a signature: dtype, shape and the model tensor it maps to."""

    dtype: DType
    shape: Annotated[
        Annotated[tuple[_Dimension, ...], Field(max_length=32), _AsTuple] | None,
        Field(description="Dimension sizes (-1 = any size); null = any rank."),
    ] = None
    tensor: Annotated[
        str | None,
        Field(
            pattern=_TENSOR,
            description="Model tensor to map to (or features.<name>); default: TF Serving's (classify, "
            "regress), else the model tensor or the feature of the same name.",
        ),
    ] = None

    @field_validator("shape", mode="wrap")
    @classmethod
    def _one_problem_per_shape(cls, value: Any, handler: Any) -> Any:
        """Returns the validated shape; a bad one is one problem, not one per dimension."""
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                f"expected a list of dimension sizes (-1 = any), got {_describe(value)}"
            ) from None


class SignatureSpec(_Section):
    """What one serving signature must look like (TF Serving's method, inputs and outputs)."""

    method: Method
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def tensor_of(self, kind: Literal["inputs", "outputs"], name: str) -> str:
        """Returns the model tensor that the input or output `name` maps to (`features.<name>`: a feature)."""
        tensor = getattr(self, kind)[name].tensor or _default_tensor(self.method, kind, name)
        if tensor is None:
            raise KeyError(f"{kind[:-1]} {name!r} maps to no model tensor")
        return tensor

    @model_validator(mode="after")
    def _servable(self) -> SignatureSpec:
        """Returns self when TF Serving's API for its method takes it and each name maps to a tensor."""
        problems = []
        api, why = _SERVING_APIS.get(self.method), f"(TF Serving's {self.method} API)"
        for kind in ("inputs", "outputs"):
            specs: dict[str, TensorSpec] = getattr(self, kind)
            allowed = api[kind] if api else {}
            if api and (not specs or not specs.keys() <= allowed.keys()):
                names = list(allowed)
                wanted = (
                    f"one {kind[:-1]} named {names[0]!r}" if len(names) == 1 else f"one or more of {names}"
                )
                problems.append(((kind,), f"expected {wanted} {why}, got {sorted(specs)}"))
            for name, spec in specs.items():
                if name in allowed and spec.dtype != allowed[name][1]:
                    problems.append(
                        ((kind, name, "dtype"), f"expected {allowed[name][1]!r} {why}, got {spec.dtype!r}")
                    )
        if problems:
            raise _refuse(problems, self)
        return self


def _default_tensor(method: str, kind: str, name: str) -> str | None:
    """Returns the model tensor of an input or output without `tensor:`, None where there is none.

    A predict input or output named like no model tensor maps to the feature of that name.
    """
    api = _SERVING_APIS.get(method)
    if api is None:
        return name if name in MODEL_TENSORS else f"features.{name}"
    default = api[kind].get(name)
    return default[0] if default else None


FeatureDType = Literal["float32", "int64", "string"]


_Fraction = Annotated[float, Field(ge=0, le=1)]


class Expectation(_Section):
    """What a feature's (or the label's) values must look like in every partition of a run's window.

    Declared bounds always apply. Where a bound is not declared, it is inferred from the baseline
    version's statistics (`data_checks`); `drift` overrides data_checks' default threshold.
    """

    min: Annotated[float | None, Field(description="Lowest value allowed (numbers).")] = None
    max: Annotated[float | None, Field(description="Highest value allowed (numbers).")] = None
    values: Annotated[
        Annotated[tuple[str, ...], Field(min_length=1, max_length=10_000), _AsTuple] | None,
        Field(description="The values a string feature may take; any other fails the partition."),
    ] = None
    max_missing: Annotated[
        _Fraction | None, Field(description="Most of a partition's examples that may lack the feature.")
    ] = None
    max_oov: Annotated[
        _Fraction | None,
        Field(description="Most of a partition's values that may lie outside the feature's vocabulary."),
    ] = None
    drift: Annotated[
        _Fraction | None,
        Field(
            description="Largest drift from the baseline: Jensen-Shannon divergence (numbers) or "
            "L-infinity distance (strings, classes); 1 = never blocks; null = data_checks' default."
        ),
    ] = None

    @model_validator(mode="after")
    def _ordered(self) -> Expectation:
        """Returns self when min is not above max."""
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _refuse([(("min",), f"expected at most max ({self.max}), got {self.min}")], self)
        return self


class FeatureSpec(_Section):
    """One input feature of the model, as every tf.Example (training data and requests) carries it."""

    dtype: Annotated[FeatureDType, Field(description="float32 (float_list), int64 (int64_list), string.")]
    shape: Annotated[
        tuple[Annotated[int, Field(ge=1, le=1_000_000)], ...],
        Field(max_length=8, description="Values per example as dimension sizes; [] = one value."),
        _AsTuple,
    ] = ()
    default: Annotated[
        float | int | str | None,
        Field(description="Value used where an example lacks the feature; null = the feature is required."),
    ] = None
    vocabulary: Annotated[
        Annotated[tuple[Annotated[str, Field(max_length=1000)], ...], Field(min_length=1), _AsTuple] | None,
        Field(description="A string feature's values, one-hot encoded for the built-in builders."),
    ] = None
    expect: Annotated[
        Expectation, Field(description="What its values must look like (data checks, before training).")
    ] = Expectation()

    @property
    def width(self) -> int:
        """Returns the number of values one example holds."""
        width = 1
        for size in self.shape:
            width *= size
        return width

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        """Returns self when the default has the feature's dtype and a vocabulary is a string feature's."""
        problems = []
        if self.default is not None:
            expected = {"float32": (float, int), "int64": (int,), "string": (str,)}[self.dtype]
            if isinstance(self.default, bool) or not isinstance(self.default, expected):
                problems.append(
                    (("default",), f"expected a {self.dtype} value, got {_describe(self.default)}")
                )
        if self.vocabulary is not None:
            if self.dtype != "string":
                problems.append(
                    (("vocabulary",), f"expected only on a string feature, got dtype {self.dtype}")
                )
            elif len(set(self.vocabulary)) != len(self.vocabulary):
                problems.append((("vocabulary",), "expected each value once, got duplicates"))
        problems.extend((("expect", *loc), text) for loc, text in _expectation_problems(self.expect, self))
        if problems:
            raise _refuse(problems, self)
        return self


def _expectation_problems(expect: Expectation, feature: FeatureSpec) -> list[tuple[tuple[str, ...], str]]:
    """Returns the expectations that do not fit the feature's dtype (string bounds, OOV, no vocabulary)."""
    problems = []
    if feature.dtype == "string":
        for key in ("min", "max"):
            if getattr(expect, key) is not None:
                problems.append(((key,), "expected only on a number feature, got a string feature"))
        wrong = [v for v in expect.values or () if not isinstance(v, str)]
        if wrong:
            problems.append((("values",), f"expected strings, got {wrong[0]!r}"))
    elif expect.values is not None:
        problems.append(
            (("values",), f"expected only on a string feature (use min and max for {feature.dtype})")
        )
    if expect.max_oov is not None and feature.vocabulary is None:
        problems.append((("max_oov",), "expected only on a string feature with a vocabulary"))
    if expect.max_missing is not None and feature.default is None:
        problems.append(
            (
                ("max_missing",),
                "expected only on a feature with a default (without one a missing value fails)",
            )
        )
    return problems


class LabelConfig(_Section):
    """The training target each example carries."""

    key: Annotated[str, Field(pattern=_FEATURE_NAME, description="The tf.Example key of the label.")] = (
        "label"
    )
    type: Annotated[
        Literal["class_index", "class_name", "float"],
        Field(
            description="class_index: int64 in 0..num_classes-1; class_name: a string of "
            "model.class_names; float: a regression target."
        ),
    ] = "class_index"
    drift: Annotated[
        _Fraction | None,
        Field(
            description="Largest drift of the label's distribution from the baseline: L-infinity distance "
            "(classes) or Jensen-Shannon divergence (float); 1 = never blocks; null = data_checks' default."
        ),
    ] = None


class DataChecksConfig(_Section):
    """The checks of a run's data before training: expectations, inferred bounds and drift from the baseline.

    The baseline is the version served now (`stable`, else the newest), as for the quality gate;
    a version older than it (a backfill) is checked against declared expectations only.
    """

    statistics: Annotated[
        bool,
        Field(
            description="false = no statistics pass before training, so no data check: the held-out rows "
            "are read and parsed again after training instead."
        ),
    ] = True
    enabled: Annotated[bool, Field(description="false = no data check (statistics are still recorded).")] = (
        True
    )
    infer: Annotated[
        bool, Field(description="Infer the bounds not declared from the baseline version's statistics.")
    ] = True
    numeric_drift: Annotated[
        _Fraction | None,
        Field(description="Default largest Jensen-Shannon divergence of a number feature; null = no check."),
    ] = 0.2
    categorical_drift: Annotated[
        _Fraction | None,
        Field(
            description="Default largest L-infinity distance of a string feature or the classes; null = none."
        ),
    ] = 0.25
    range_margin: Annotated[
        float,
        Field(
            ge=0,
            le=100,
            description="Inferred [min, max]: the baseline's, widened by this part of its range each side.",
        ),
    ] = 1.0
    missing_slack: Annotated[
        _Fraction, Field(description="Inferred max_missing: the baseline's missing fraction plus this.")
    ] = 0.1
    oov_slack: Annotated[
        _Fraction, Field(description="Inferred max_oov: the baseline's out-of-vocabulary fraction plus this.")
    ] = 0.05
    min_drift_examples: Annotated[
        int,
        Field(
            ge=1,
            le=1_000_000,
            description="Drift compares the partitions the baseline did not see with the baseline's "
            "window; when they hold fewer examples than this, the newest earlier partitions are added.",
        ),
    ] = 50


class DataConfig(_Section):
    """Where the training data lives and which part of it a run reads."""

    location: Annotated[
        _Location,
        Field(
            description="Folder of date partitions: a path (relative to the project), gs://bucket/prefix "
            "or s3://bucket/prefix."
        ),
    ]
    connection: Annotated[
        _ConnectionId | None,
        Field(
            description="Airflow connection with the credentials of location's bucket; null = default chain."
        ),
    ] = None
    format: Literal["tfrecord"] = "tfrecord"
    window_days: Annotated[
        int | None, Field(ge=1, le=36500, description="Days of data before the run's date; null = all of it.")
    ] = None
    eval_percent: Annotated[int, Field(ge=1, le=50, description="Percent held out for evaluation.")] = 20
    id_key: Annotated[
        str, Field(pattern=_FEATURE_NAME, description="The tf.Example key of the example id (the split).")
    ] = "id"
    id_dtype: Annotated[Literal["int64", "string"], Field(description="The example id's dtype.")] = "int64"


class ModelConfig(_Section):
    """The model: its served name, the builder that makes it and its head."""

    name: Annotated[_Identifier, Field(description="Its name in TF Serving and folder in serving_root.")]
    builder: Annotated[
        str,
        Field(
            pattern=_BUILDER,
            description="softmax, mlp or package.module:function (a Keras 3 model or a TF1 graph function)",
        ),
    ]
    head: Annotated[
        Head, Field(description="classification (classify, predict) or regression (regress).")
    ] = "classification"
    num_classes: Annotated[int | None, Field(ge=2, le=100_000, description="Classification only.")] = None
    class_names: Annotated[
        Annotated[tuple[str, ...], _AsTuple] | None,
        Field(description="Labels the classify signature returns; default '0', '1', ..."),
    ] = None
    hidden_units: Annotated[
        tuple[Annotated[int, Field(ge=1, le=100_000)], ...],
        Field(max_length=32, description="Layer sizes of the 'mlp' builder."),
        _AsTuple,
    ] = ()

    @model_validator(mode="after")
    def _one_name_per_class(self) -> ModelConfig:
        """Returns self when a classifier has num_classes and class_names, if given, names each once."""
        problems = []
        if self.head == "classification" and self.num_classes is None:
            problems.append((("num_classes",), "required for head 'classification'"))
        if self.head == "regression":
            for key in ("num_classes", "class_names"):
                if getattr(self, key) is not None:
                    problems.append(((key,), "expected nothing for head 'regression' (one float output)"))
        elif self.class_names is not None:
            if len(self.class_names) != self.num_classes:
                got = len(self.class_names)
                problems.append(
                    (("class_names",), f"expected {self.num_classes} names (model.num_classes), got {got}")
                )
            elif len(set(self.class_names)) != len(self.class_names):
                problems.append((("class_names",), "expected each name once, got duplicates"))
        if problems:
            raise _refuse(problems, self)
        return self


class TrainingConfig(_Section):
    """Hyperparameters of one training run, and how its input is read."""

    steps: Annotated[int | None, Field(ge=1, le=100_000_000, description="Train steps (or epochs).")] = None
    epochs: Annotated[int | None, Field(ge=1, le=10_000, description="Passes over the train split.")] = None
    batch_size: Annotated[int, Field(ge=1, le=65_536)]
    learning_rate: Annotated[float, Field(gt=0, le=10)]
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    log_every_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    deterministic: Annotated[
        bool,
        Field(
            description="Reruns of a date give byte-identical models (input order fixed, model math on "
            "one thread); false = all cores, faster, not reproducible."
        ),
    ] = True
    shuffle_buffer: Annotated[
        int,
        Field(
            ge=1,
            le=10_000_000,
            description=(
                "About how many train examples are shuffled together: the train input shuffles "
                "parsed batches (of at least 1,024 records) in a buffer of this many examples' worth, "
                "then the examples within each batch."
            ),
        ),
    ] = 10_000

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingConfig:
        """Returns self when exactly one of steps and epochs says how long to train."""
        if (self.steps is None) == (self.epochs is None):
            got = "both" if self.steps is not None else "neither"
            raise _refuse([(("steps",), f"expected exactly one of steps and epochs, got {got}")], self)
        return self


class SliceSpec(_Section):
    """Held-out metrics by the value of one feature (or bucket of a number, or the label), each gated."""

    by: Annotated[
        str,
        Field(
            pattern=_FEATURE_NAME,
            description="A declared feature of one value per example, or `label`: its values cut the slices.",
        ),
    ]
    boundaries: Annotated[
        Annotated[tuple[float, ...], Field(min_length=1, max_length=100), _AsTuple] | None,
        Field(
            description="Ascending cut points of a number feature (or a float label); the buckets are slices."
        ),
    ] = None
    min_examples: Annotated[
        int,
        Field(
            ge=1,
            le=1_000_000,
            description="A slice of at least this many held-out examples in the baseline may not lose them.",
        ),
    ] = 1
    min_accuracy: Annotated[
        float | None, Field(ge=0, le=1, description="Floor on each slice's accuracy.")
    ] = None
    max_loss: Annotated[float | None, Field(ge=0, description="Ceiling on each slice's held-out loss.")] = (
        None
    )
    max_accuracy_drop: Annotated[
        float | None,
        Field(ge=0, le=1, description="Most a slice's accuracy may drop below the baseline's slice."),
    ] = None
    max_loss_increase: Annotated[
        float | None,
        Field(
            ge=0, le=100, description="Most a slice's loss may rise above the baseline's slice (0.1 = 10%)."
        ),
    ] = None

    @model_validator(mode="after")
    def _ascending(self) -> SliceSpec:
        """Returns self when the boundaries ascend."""
        if self.boundaries is not None and list(self.boundaries) != sorted(set(self.boundaries)):
            raise _refuse(
                [(("boundaries",), f"expected ascending values, got {list(self.boundaries)}")], self
            )
        return self


class QualityConfig(_Section):
    """The quality gate: absolute thresholds and no regression against the served version."""

    min_accuracy: Annotated[float, Field(ge=0, le=1, description="Floor on held-out accuracy.")] = 0.0
    max_loss: Annotated[float | None, Field(ge=0, description="Ceiling on held-out loss.")] = None
    max_accuracy_drop: Annotated[
        float | None, Field(ge=0, le=1, description="Most accuracy may drop below the stable/newest version.")
    ] = 0.02
    max_loss_increase: Annotated[
        float | None,
        Field(
            ge=0,
            le=100,
            description="Most the held-out loss may rise above the stable/newest version's (0.1 = 10%).",
        ),
    ] = None
    allow_breaking_signature_change: Annotated[
        bool, Field(description="Publish even if a signature, input or output that clients use changed.")
    ] = False
    slices: Annotated[
        tuple[SliceSpec, ...],
        Field(max_length=20, description="Held-out metrics by slice, recorded and gated."),
        _AsTuple,
    ] = ()


#: An Airflow user name or role as the auth manager knows it (no spaces, commas or colons).
_Principal = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@+-]{1,100}$")]


class Approvers(_Section):
    """Who may approve a `stable` move: Airflow users and/or roles; never the user who asked for it."""

    users: Annotated[
        tuple[_Principal, ...], Field(max_length=50, description="Airflow user names."), _AsTuple
    ] = ()
    roles: Annotated[
        tuple[_Principal, ...],
        Field(
            max_length=10,
            description="Airflow roles (simple auth manager: viewer, user, op, admin); every user "
            "holding one may approve.",
        ),
        _AsTuple,
    ] = ()

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        """Returns self when it names at least one user or role."""
        if not self.users and not self.roles:
            raise _refuse([((), "expected at least one of users, roles")], self)
        return self


class ServingConfig(_Section):
    """What TensorFlow Serving loads (models.config) and how many versions stay on disk."""

    version_policy: Annotated[
        Literal["latest", "all", "specific"],
        Field(description="specific = the labelled versions and latest."),
    ] = "latest"
    num_latest: Annotated[int, Field(ge=1, le=100, description="Latest versions TF Serving loads.")] = 1
    keep_versions: Annotated[
        int | None, Field(ge=1, le=100_000, description="Versions kept on disk, besides labelled ones.")
    ] = None
    warmup_examples: Annotated[int, Field(ge=0, le=1000, description="Rows per warmup request.")] = 8
    promotion_approval: Annotated[
        Literal["required", "none"],
        Field(
            description="required = moving `stable` waits for a person to approve it in the Airflow UI "
            "(Required actions); `canary` moves never wait."
        ),
    ] = "none"
    approvers: Annotated[
        Approvers | None,
        Field(
            description="Who may approve a `stable` move (with promotion_approval: required); null = "
            "anyone Airflow lets answer the DAG's required actions. The requester never may."
        ),
    ] = None

    @model_validator(mode="after")
    def _keep_what_is_served(self) -> ServingConfig:
        """Returns self when retention keeps at least the versions TF Serving loads."""
        if self.keep_versions is not None and self.keep_versions < self.num_latest:
            wanted = f"at least serving.num_latest ({self.num_latest})"
            raise _refuse([(("keep_versions",), f"expected {wanted}, got {self.keep_versions}")], self)
        return self


class StorageConfig(_Section):
    """Roots on disk: run-scoped work/export area, and the tree TF Serving reads."""

    export_root: Annotated[
        _Location,
        Field(description="Where runs keep their work (record, checkpoint, export): a path or a bucket URI."),
    ]
    serving_root: Annotated[
        _Location, Field(description="The model tree TF Serving reads: a path or a bucket URI.")
    ]
    connection: Annotated[
        _ConnectionId | None,
        Field(
            description="Airflow connection with the credentials of the roots' buckets; null = default chain."
        ),
    ] = None

    @model_validator(mode="after")
    def _roots_differ(self) -> StorageConfig:
        """Returns self when the roots differ: TF Serving must never see a run's scratch directories."""
        if self.export_root == self.serving_root:
            raise ValueError("export_root and serving_root must be different directories")
        return self


class OperationsConfig(_Section):
    """How Airflow runs the pipeline: concurrency caps, queues, timeouts, retry backoff, sensor mode."""

    max_active_runs: Annotated[int, Field(ge=1, le=64, description="Runs of this pipeline at once.")] = 2
    training_pool: Annotated[_QueueName | None, Field(description="Airflow pool of train tasks.")] = (
        "training"
    )
    training_queue: Annotated[_QueueName | None, Field(description="Celery queue of train tasks.")] = None
    train_timeout_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 60
    task_timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    retry_backoff_multiplier: Annotated[
        float, Field(ge=0, le=10, description="Each retry waits this many times longer; 0 = constant.")
    ] = 2.0
    max_retry_delay_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    sensor_mode: Literal["poke", "reschedule", "deferrable"] = "reschedule"
    sensor_timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30


NotificationEvent = Literal["run_failed", "gate_blocked", "approval_waiting", "label_moved"]
_EMAIL_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _email_problem(value: str) -> str | None:
    """Returns why `value` is no email address (None if it is one)."""
    if len(value) <= 254 and _EMAIL_ADDRESS.match(value):
        return None
    return f"expected an email address like ml-team@example.com, got {_describe(value)}"


class EmailNotifications(_Section):
    """Email over SMTP: who gets the pipeline's events, through which Airflow connection."""

    to: Annotated[
        tuple[str, ...],
        Field(min_length=1, max_length=50, description="Addresses that get every event."),
        _AsTuple,
    ]
    approvers: Annotated[
        Annotated[tuple[str, ...], Field(min_length=1, max_length=50), _AsTuple] | None,
        Field(description="Addresses that get approval_waiting (with the link to approve); null = `to`."),
    ] = None
    connection: Annotated[
        _ConnectionId,
        Field(description="Airflow SMTP connection: host, port, login, password, TLS, from_email in extra."),
    ] = "smtp_default"
    from_email: Annotated[
        str | None, Field(description="The sender; null = the connection's extra from_email.")
    ] = None

    @field_validator("to", "approvers")
    @classmethod
    def _addresses(cls, addresses: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Returns the addresses when each is an email address."""
        for address in addresses or ():
            if problem := _email_problem(address):
                raise ValueError(problem)
        return addresses

    @field_validator("from_email")
    @classmethod
    def _sender(cls, address: str | None) -> str | None:
        """Returns the sender when it is an email address."""
        if address is not None and (problem := _email_problem(address)):
            raise ValueError(problem)
        return address


class WebhookNotifications(_Section):
    """A webhook: the pipeline's events POSTed as JSON, signed with the connection's secret."""

    url: Annotated[
        str,
        Field(max_length=2048, description="http(s) URL the events are POSTed to (no credentials in it)."),
    ]
    connection: Annotated[
        _ConnectionId,
        Field(description="Airflow connection whose password is the secret the requests are signed with."),
    ]

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        """Returns the URL when it is http(s) with a host, no credentials, no fragment and no spaces."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(c.isspace() for c in url)
        ):
            raise ValueError(f"expected an http:// or https:// URL with a host, got {_describe(url)}")
        if "@" in parts.netloc:
            raise ValueError("expected no user or password in the URL: put the secret in the connection")
        if parts.fragment:
            raise ValueError(f"expected a URL without a #fragment, got {_describe(url)}")
        return url


class NotificationsConfig(_Section):
    """Who hears of the pipeline's events, by email and signed webhooks (none by default)."""

    events: Annotated[
        tuple[NotificationEvent, ...],
        Field(
            max_length=4,
            description="Events to send: run_failed (after the last try), gate_blocked (with the report), "
            "approval_waiting (with the link), label_moved.",
        ),
        _AsTuple,
    ] = ("run_failed", "gate_blocked", "approval_waiting", "label_moved")
    email: Annotated[EmailNotifications | None, Field(description="Email over SMTP; null = none.")] = None
    webhooks: Annotated[
        tuple[WebhookNotifications, ...], Field(max_length=10, description="Signed JSON webhooks."), _AsTuple
    ] = ()
    attempts: Annotated[int, Field(ge=1, le=5, description="Tries per receiver (down or slow).")] = 3
    timeout_seconds: Annotated[
        float, Field(gt=0, le=30, description="Most seconds one try may take; then it counts as failed.")
    ] = 5.0

    @field_validator("events")
    @classmethod
    def _each_once(cls, events: tuple[str, ...]) -> tuple[str, ...]:
        """Returns the events when none is named twice."""
        if len(set(events)) != len(events):
            raise ValueError(f"expected each event once, got {list(events)}")
        return events


class PipelineConfig(_Section):
    """One pipeline, as declared by one YAML file."""

    name: Annotated[_Identifier, Field(description="The pipeline's name and DAG id, unique in the folder.")]
    start_date: _Date
    data: DataConfig
    features: Annotated[
        dict[Annotated[str, Field(pattern=_FEATURE_NAME)], FeatureSpec],
        Field(
            description="The model's input features by tf.Example key, in the order built-in builders "
            "concatenate them.",
            json_schema_extra={"minProperties": 1},
        ),
    ]
    label: LabelConfig = LabelConfig()
    model: ModelConfig
    training: TrainingConfig
    signatures: Annotated[
        dict[Annotated[str, Field(pattern=_SIGNATURE_KEY)], SignatureSpec],
        Field(
            description="The signatures the SavedModel must have, by key: the contract clients rely on.",
            json_schema_extra={"minProperties": 1, "additionalProperties": False},
        ),
    ]
    storage: StorageConfig
    description: str = ""
    schedule: Annotated[
        str | None, Field(description="A preset (@daily, ...) or a 5-field cron expression; null = none.")
    ] = None
    catchup: bool = False
    owner: str = "airflow"
    tags: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=100)], ...], _AsTuple] = ()
    retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay_minutes: Annotated[int, Field(ge=0, le=1440)] = 2
    quality: QualityConfig = QualityConfig()
    data_checks: DataChecksConfig = DataChecksConfig()
    operations: OperationsConfig = OperationsConfig()
    serving: ServingConfig = ServingConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    # The file it was read from: not a YAML key, so not in the schema; model_copy keeps it.
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def dag_id(self) -> str:
        """Returns the Airflow DAG id of this pipeline."""
        return self.name

    @property
    def source_path(self) -> Path | None:
        """Returns the YAML file this config was loaded from (None for one built in code)."""
        return self._source_path

    @field_validator("name")
    @classmethod
    def _not_a_project_dag(cls, name: str) -> str:
        """Returns the name unless it is the DAG id of one of the project's own DAGs."""
        if name in PROJECT_DAG_IDS:
            raise ValueError(f"{name!r} is the DAG id of the project's own DAG in dags/: pick another name")
        return name

    @field_validator("schedule")
    @classmethod
    def _preset_or_cron(cls, schedule: str | None) -> str | None:
        """Returns the schedule when it is a known preset or a 5-field cron expression."""
        if schedule is None:
            return None
        text = schedule.strip()
        if text.startswith("@"):
            if text not in _SCHEDULE_PRESETS:
                raise ValueError(
                    f"expected one of {list(_SCHEDULE_PRESETS)} or a cron expression, got {text!r}"
                )
        elif len(text.split()) != 5 or not all(re.match(_CRON_FIELD, f) for f in text.split()):
            raise ValueError(f"expected a 5-field cron expression or a preset, got {text!r}")
        return schedule

    @field_validator("signatures")
    @classmethod
    def _at_least_one(cls, signatures: dict[str, SignatureSpec]) -> dict[str, SignatureSpec]:
        """Returns the signatures when there is one or more: a model nobody can call is no use."""
        if not signatures:
            raise ValueError("expected at least one signature")
        return signatures

    @field_validator("features")
    @classmethod
    def _some_features(cls, features: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
        """Returns the features when there is one or more."""
        if not features:
            raise ValueError("expected at least one feature")
        return features

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        """Returns self when features, label, head, quality gate and signatures agree with each other."""
        problems = [*self._label_problems(), *self._feature_problems(), *self._slice_problems()]
        for key, spec in self.signatures.items():
            problems.extend((("signatures", key, *loc), text) for loc, text in self._signature_problems(spec))
        if problems:
            raise _refuse(problems, self)
        return self

    def _label_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Returns what is wrong between the label, the head and the quality gate."""
        head, kind = self.model.head, self.label.type
        problems = []
        if (head == "regression") != (kind == "float"):
            wanted = "'float'" if head == "regression" else "'class_index' or 'class_name'"
            problems.append((("label", "type"), f"expected {wanted} for head {head!r}, got {kind!r}"))
        if kind == "class_name" and self.model.class_names is None:
            problems.append((("model", "class_names"), "required for label.type 'class_name'"))
        if head == "regression" and self.quality.min_accuracy:
            problems.append((("quality", "min_accuracy"), "expected 0 for head 'regression' (no accuracy)"))
        return problems

    def _feature_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Returns feature names that clash with the label or id, and strings the built-ins cannot encode."""
        problems = []
        for name, spec in self.features.items():
            if name in (self.label.key, self.data.id_key):
                problems.append((("features", name), "expected a name other than the label and id keys"))
            if (
                spec.dtype == "string"
                and spec.vocabulary is None
                and self.model.builder in ("softmax", "mlp")
            ):
                why = f"required for a string feature of the built-in {self.model.builder!r} builder"
                problems.append((("features", name, "vocabulary"), why))
        if self.label.key == self.data.id_key:
            problems.append((("label", "key"), f"expected a key other than data.id_key {self.data.id_key!r}"))
        return problems

    def _slice_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Returns slices by unknown or multi-valued features, missing or stray boundaries, wrong metrics."""
        problems = []
        regression = self.model.head == "regression"
        for index, spec in enumerate(self.quality.slices):
            at = ("quality", "slices", str(index))
            if spec.by == "label":
                dtype = "float32" if regression else "int64"
            elif spec.by in self.features:
                feature = self.features[spec.by]
                if feature.width != 1:
                    problems.append(
                        ((*at, "by"), f"expected a feature of one value, got shape {list(feature.shape)}")
                    )
                dtype = feature.dtype
            else:
                problems.append(((*at, "by"), f"expected `label` or a declared feature, got {spec.by!r}"))
                continue
            if dtype == "float32" and spec.boundaries is None:
                problems.append(((*at, "boundaries"), f"required to slice by the numbers of {spec.by!r}"))
            if dtype == "string" and spec.boundaries is not None:
                problems.append(
                    ((*at, "boundaries"), f"expected only for numbers; {spec.by!r} holds strings")
                )
            if regression and (spec.min_accuracy is not None or spec.max_accuracy_drop is not None):
                problems.append(((*at,), "expected no accuracy bound for head 'regression' (no accuracy)"))
        names = [spec.by for spec in self.quality.slices]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append((("quality", "slices"), f"expected each `by` once, got {name!r} twice"))
        return problems

    def _signature_problems(self, spec: SignatureSpec) -> list[tuple[tuple[str, ...], str]]:
        """Returns what is wrong with one signature's tensors given the features and the head."""
        head = self.model.head
        problems = []
        api_head = {"classify": "classification", "regress": "regression"}.get(spec.method)
        if api_head not in (None, head):
            problems.append(
                (("method",), f"expected predict or a method of head {head!r}, got {spec.method!r}")
            )
        fed = set()
        for kind in ("inputs", "outputs"):
            for name in getattr(spec, kind):
                tensor = spec.tensor_of(kind, name)
                feature = tensor.removeprefix("features.") if tensor.startswith("features.") else None
                if feature is not None and feature not in self.features:
                    known = f"no feature is named {feature!r}; features: {list(self.features)}"
                    problems.append(((kind, name, "tensor"), f"expected a model tensor or feature ({known})"))
                elif kind == "inputs" and feature is None and tensor != "examples":
                    problems.append(
                        ((kind, name, "tensor"), f"expected examples or features.<name>, got {tensor!r}")
                    )
                elif kind == "outputs" and tensor not in HEAD_TENSORS[head]:
                    wanted = list(HEAD_TENSORS[head])
                    problems.append(
                        ((kind, name, "tensor"), f"expected one of {wanted} (head {head!r}), got {tensor!r}")
                    )
                if kind == "inputs":
                    fed.add(tensor)
        if fed != {"examples"} and fed != {f"features.{name}" for name in self.features}:
            wanted = f"either one 'examples' input or every feature ({list(self.features)})"
            problems.append((("inputs",), f"expected {wanted}, got {sorted(fed)}"))
        return problems
