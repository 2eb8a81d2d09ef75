"""Pipeline YAML files: the schema, loading and validation into frozen config objects.

This module is the one place that knows the YAML schema. It imports no TensorFlow and no
Airflow, so the DAG factory can call it on every parse.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
import reprlib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from include.errors import ConfigError

#: The project root: relative paths in a pipeline YAML are resolved against it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where the pipeline YAML files live; `SAVEDMODEL_PIPELINES_DIR` overrides it.
DEFAULT_PIPELINES_DIR = PROJECT_ROOT / "include" / "pipelines"

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SIGNATURE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_BUILDER_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SCHEDULE_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
_MAX_CONFIG_BYTES = 1_000_000

DType = Literal["float16", "float32", "float64", "int32", "int64", "string", "bool"]
Method = Literal["predict", "classify", "regress"]


def _bounded(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """Returns dataclass field metadata that bounds a number."""
    return {"low": low, "high": high, "low_open": low_open}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: dtype and shape (-1 = any size, null = any rank)."""

    dtype: DType
    shape: tuple[int, ...] | None = field(default=None, metadata={"shape": True})


@dataclass(frozen=True)
class SignatureSpec:
    """What one serving signature must look like."""

    method: Method
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class DataConfig:
    """Where the training data lives and which part of it a run reads."""

    location: Path
    format: Literal["tfrecord"] = "tfrecord"
    window_days: int | None = field(default=None, metadata=_bounded(1, 36500))
    eval_percent: int = field(default=20, metadata=_bounded(1, 50))
    feature_key: str = "x"
    label_key: str = "label"


@dataclass(frozen=True)
class ModelConfig:
    """The model: its served name and the graph builder that makes it."""

    name: str = field(metadata={"identifier": True})
    builder: str
    num_features: int = field(metadata=_bounded(1, 1_000_000))
    num_classes: int = field(metadata=_bounded(2, 100_000))
    class_names: tuple[str, ...] | None = None
    hidden_units: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of one training run."""

    steps: int = field(metadata=_bounded(1, 1_000_000))
    batch_size: int = field(metadata=_bounded(1, 65_536))
    learning_rate: float = field(metadata=_bounded(0, 10, low_open=True))
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = field(default=0, metadata=_bounded(0, 2**31 - 1))
    log_every_steps: int = field(default=100, metadata=_bounded(1, 1_000_000))


@dataclass(frozen=True)
class QualityConfig:
    """The quality gate: absolute thresholds and no regression against the served version."""

    min_accuracy: float = field(default=0.0, metadata=_bounded(0, 1))
    max_loss: float | None = field(default=None, metadata=_bounded(0, None))
    # No regression: accuracy may drop at most this much below the `stable` (or newest) version.
    max_accuracy_drop: float | None = field(default=0.02, metadata=_bounded(0, 1))
    allow_breaking_signature_change: bool = False


@dataclass(frozen=True)
class ServingConfig:
    """What TensorFlow Serving loads (models.config) and how many versions stay on disk."""

    version_policy: Literal["latest", "all", "specific"] = "latest"
    num_latest: int = field(default=1, metadata=_bounded(1, 100))
    keep_versions: int | None = field(default=None, metadata=_bounded(1, 100_000))
    warmup_examples: int = field(default=8, metadata=_bounded(0, 1000))


@dataclass(frozen=True)
class StorageConfig:
    """Roots on disk: run-scoped work/export area, and the tree TF Serving reads."""

    export_root: Path
    serving_root: Path


@dataclass(frozen=True)
class OperationsConfig:
    """How Airflow runs the pipeline: concurrency caps, queues, timeouts, retry backoff, sensor mode."""

    max_active_runs: int = field(default=2, metadata=_bounded(1, 64))
    training_pool: str | None = "training"
    training_queue: str | None = None
    train_timeout_minutes: int = field(default=60, metadata=_bounded(1, 7 * 24 * 60))
    task_timeout_minutes: int = field(default=15, metadata=_bounded(1, 24 * 60))
    retry_backoff_multiplier: float = field(default=2.0, metadata=_bounded(0, 10))
    max_retry_delay_minutes: int = field(default=30, metadata=_bounded(1, 24 * 60))
    sensor_mode: Literal["poke", "reschedule", "deferrable"] = "reschedule"
    sensor_timeout_minutes: int = field(default=30, metadata=_bounded(1, 24 * 60))


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline, as declared by one YAML file."""

    name: str = field(metadata={"identifier": True})
    start_date: dt.date
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    signatures: dict[str, SignatureSpec]
    storage: StorageConfig
    description: str = ""
    schedule: str | None = None
    catchup: bool = False
    owner: str = "airflow"
    tags: tuple[str, ...] = ()
    retries: int = field(default=2, metadata=_bounded(0, 20))
    retry_delay_minutes: int = field(default=2, metadata=_bounded(0, 1440))
    quality: QualityConfig = QualityConfig()
    operations: OperationsConfig = OperationsConfig()
    serving: ServingConfig = ServingConfig()
    source_path: Path | None = field(default=None, metadata={"internal": True})

    @property
    def dag_id(self) -> str:
        """Returns the Airflow DAG id of this pipeline."""
        return self.name


# libyaml's C parser when PyYAML has it (about 10x faster: the scheduler parses every file every
# 30 s); same safe constructors either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_pipeline_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Returns the validated config of one pipeline YAML file; raises ConfigError."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(str(path), [f"file is larger than {_MAX_CONFIG_BYTES} bytes"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), [f"cannot read file: {err}"]) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(str(path), [f"not valid YAML: {err}"]) from None
    return parse_pipeline_config(raw, source=path.resolve())


def parse_pipeline_config(raw: Any, source: str | os.PathLike[str] = "<string>") -> PipelineConfig:
    """Returns a PipelineConfig built from already-parsed YAML; raises ConfigError."""
    problems: list[str] = []
    config = _convert(PipelineConfig, raw, "", problems)
    if not problems:
        problems.extend(_cross_checks(config))
    if problems:
        raise ConfigError(str(source), problems)
    return dataclasses.replace(config, source_path=Path(source))


def iter_pipeline_files(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Returns the pipeline YAML files in the pipelines folder, sorted by name."""
    directory = Path(directory or os.environ.get("SAVEDMODEL_PIPELINES_DIR") or DEFAULT_PIPELINES_DIR)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_all_pipelines(
    directory: str | os.PathLike[str] | None = None,
) -> tuple[list[PipelineConfig], list[ConfigError]]:
    """Returns the valid pipelines of a folder and one ConfigError per invalid file.

    Memoized on every file's path, size and mtime: the DAG modules of one parse share one read.
    """
    configs, errors = _load_all(tuple(_file_stamp(p) for p in iter_pipeline_files(directory)))
    return list(configs), list(errors)


def _file_stamp(path: Path) -> tuple[str, int, int]:
    """Returns (path, size, mtime) of a file; a file that vanished gets a stamp that never matches."""
    try:
        stat = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load_all(
    stamp: tuple[tuple[str, int, int], ...],
) -> tuple[tuple[PipelineConfig, ...], tuple[ConfigError, ...]]:
    configs: list[PipelineConfig] = []
    errors: list[ConfigError] = []
    for path_name, _, _ in stamp:
        path = Path(path_name)
        try:
            configs.append(load_pipeline_config(path))
        except ConfigError as err:
            errors.append(err)
    # A pipeline name is a DAG id and a directory name: two files claiming it are both wrong.
    by_name: dict[str, list[PipelineConfig]] = {}
    for config in configs:
        by_name.setdefault(config.name, []).append(config)
    valid = []
    for config in configs:
        clashes = [str(c.source_path) for c in by_name[config.name] if c is not config]
        if clashes:
            errors.append(
                ConfigError(
                    str(config.source_path), [f"name: {config.name!r} is also used by {', '.join(clashes)}"]
                )
            )
        else:
            valid.append(config)
    return tuple(valid), tuple(errors)


def _cross_checks(config: PipelineConfig) -> Iterator[str]:
    """Yields problems that involve more than one key."""
    if config.schedule is not None:
        schedule = config.schedule.strip()
        if schedule.startswith("@"):
            if schedule not in _SCHEDULE_PRESETS:
                presets = sorted(_SCHEDULE_PRESETS)
                yield f"schedule: expected one of {presets} or a cron expression, got {schedule!r}"
        else:
            fields = schedule.split()
            if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
                yield f"schedule: expected a 5-field cron expression or a preset, got {schedule!r}"
    model = config.model
    if model.class_names is not None and len(model.class_names) != model.num_classes:
        yield (
            f"model.class_names: expected {model.num_classes} names (model.num_classes), "
            f"got {len(model.class_names)}"
        )
    if model.builder not in ("softmax", "mlp") and not _BUILDER_PATH.match(model.builder):
        yield (
            f"model.builder: expected 'softmax', 'mlp' or 'package.module:function', got {model.builder!r}"
        )
    if any(not 1 <= units <= 100_000 for units in model.hidden_units) or len(model.hidden_units) > 32:
        units = list(model.hidden_units)
        yield f"model.hidden_units: expected at most 32 layer sizes in 1..100000, got {units}"
    if not config.signatures:
        yield "signatures: expected at least one signature"
    for key in config.signatures:
        if not _SIGNATURE_KEY.match(key):
            yield f"signatures.{key}: expected a signature key made of letters, digits and '_'"
    for tag in config.tags:
        if not tag or len(tag) > 100:
            yield f"tags: expected non-empty tags of at most 100 characters, got {tag!r}"
    if config.serving.keep_versions is not None and config.serving.keep_versions < config.serving.num_latest:
        yield (
            f"serving.keep_versions: expected at least serving.num_latest ({config.serving.num_latest}), "
            f"got {config.serving.keep_versions}"
        )
    for key in ("training_pool", "training_queue"):
        name = getattr(config.operations, key)
        if name is not None and not re.match(r"^[A-Za-z0-9_.-]{1,256}$", name):
            yield f"operations.{key}: expected letters, digits, '_', '.' or '-', got {name!r}"
    if config.storage.export_root == config.storage.serving_root:
        yield "storage: export_root and serving_root must be different directories"


# --- generic conversion of parsed YAML into the dataclasses above ---------------------------


def _describe(value: Any) -> str:
    """Returns a short description of a YAML value for error messages."""
    text = reprlib.repr(value)  # bounded: a YAML alias bomb must not explode the message
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, path: str, problems: list[str], meta: Mapping[str, Any] = {}) -> Any:
    """Returns `value` converted to type `tp`, appending a message to `problems` on error."""
    where = path or "<top level>"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
        if len(options) == 1:
            return _convert(options[0], value, path, problems, meta)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, problems)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            problems.append(f"{where}: expected one of {list(allowed)}, got {_describe(value)}")
        return value
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {_describe(value)}")
            return {}
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: expected string keys, got {_describe(key)}")
                continue
            result[key] = _convert(value_type, item, _join(path, key), problems)
        return result
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if meta.get("shape") and value is None:
            return None
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_describe(value)}")
            return ()
        if meta.get("shape"):
            bad = [d for d in value if isinstance(d, bool) or not isinstance(d, int) or not -1 <= d <= 2**31]
            if bad or len(value) > 32:
                problems.append(
                    f"{where}: expected a list of dimension sizes (-1 = any), got {_describe(value)}"
                )
                return ()
            return tuple(value)
        return tuple(_convert(item_type, item, f"{path}[{i}]", problems) for i, item in enumerate(value))
    if tp is Path:
        if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 4096:
            problems.append(f"{where}: expected a non-empty path string, got {_describe(value)}")
            return Path(".")
        path_value = Path(value).expanduser()
        if ".." in path_value.parts:
            problems.append(f"{where}: expected a path without '..' components, got {value!r}")
            return Path(".")
        return path_value if path_value.is_absolute() else (PROJECT_ROOT / path_value)
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        problems.append(f"{where}: expected a date YYYY-MM-DD, got {_describe(value)}")
        return dt.date(1970, 1, 1)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            problems.append(
                f"{where}: expected {'an integer' if tp is int else 'a number'}, got {_describe(value)}"
            )
            return value
        if tp is float and value != value:  # NaN
            problems.append(f"{where}: expected a number, got NaN")
            return value
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value <= low if meta.get("low_open") else value < low):
            problems.append(
                f"{where}: expected a value {'>' if meta.get('low_open') else '>='} {low}, got {value}"
            )
        elif high is not None and value > high:
            problems.append(f"{where}: expected a value <= {high}, got {value}")
        return tp(value) if tp is float else value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_describe(value)}")
            return ""
        if meta.get("identifier") and not _IDENTIFIER.match(value):
            problems.append(
                f"{where}: expected lowercase letters, digits and '_' starting with a letter "
                f"(at most 64), got {value!r}"
            )
        return value
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {where}")


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """Returns the resolved type hints and the YAML-visible fields of a config dataclass (cached)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    return typing.get_type_hints(cls), fields


def _convert_dataclass(cls: type, value: Any, path: str, problems: list[str]) -> Any:
    """Returns an instance of the dataclass `cls` built from a YAML mapping."""
    where = path or "<top level>"
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {_describe(value)}")
        return None
    hints, fields = _schema(cls)
    for key in value:
        if key not in fields:
            problems.append(f"{_join(path, str(key))}: unknown key (expected one of {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], _join(path, name), problems, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(path, name)}: required key is missing")
    if problems:
        return None
    return cls(**kwargs)
