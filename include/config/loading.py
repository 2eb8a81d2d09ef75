"""Loading a pipeline YAML: bytes to a validated PipelineConfig, every problem in our words.

A duplicate key, a file too large, YAML that does not parse, and every pydantic error become one
ConfigError naming the file, the dotted key, what was expected and what was found.
"""

from __future__ import annotations

import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from include.config.schema import _MAX_CONFIG_BYTES, _PATTERN_WORDS, PipelineConfig, _describe
from include.errors import ConfigError, StorageError
from include.storage.connections import use_connection

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
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read file: {err}"]) from None
    return parse_pipeline_yaml(data, source=path.resolve())


def parse_pipeline_yaml(data: bytes, source: str | os.PathLike[str] = "<string>") -> PipelineConfig:
    """Returns the validated config of a pipeline YAML file's bytes; raises ConfigError naming `source`."""
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(str(source), [f"file is larger than {_MAX_CONFIG_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(str(source), [f"cannot read file: {err}"]) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(str(source), [f"not valid YAML: {err}"]) from None
    return parse_pipeline_config(raw, source=source)


def parse_pipeline_config(raw: Any, source: str | os.PathLike[str] = "<string>") -> PipelineConfig:
    """Returns a PipelineConfig built from already-parsed YAML; raises ConfigError listing every problem."""
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(str(source), [_problem(e) for e in err.errors()]) from None
    config._source_path = Path(source)
    try:  # this process opens the config's buckets with the connections it names
        use_connection(config.data.location, config.data.connection)
        for root in (config.storage.export_root, config.storage.serving_root):
            use_connection(root, config.storage.connection)
    except StorageError as err:
        raise ConfigError(str(source), [str(err)]) from None
    return config


#: What pydantic's error types expected, in the words of our messages ({...} from the error's ctx).
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "string_unicode": "a string without lone surrogates",
    "string_too_short": "a string of length >= {min_length}",
    "string_too_long": "a string of length <= {max_length}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} items",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "tuple_type": "a list",
    "date_type": "a date YYYY-MM-DD",
    "invalid_key": "string keys",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _problem(error: ErrorDetails) -> str:
    """Returns one pydantic error as `<dotted.key>: expected ..., got ...`."""
    loc, kind, ctx, value = error["loc"], error["type"], error.get("ctx", {}), error["input"]
    if loc[-1:] == ("[key]",) or kind == "invalid_key":  # a bad key is a problem of its mapping
        loc = loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1]
        kind = "invalid_key" if kind == "string_type" else kind
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    key = key or "<top level>"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (expected one of {sorted(_type_at(loc[:-1]).model_fields)})"
    if kind == "value_error":  # our own validators word their problems themselves
        return f"{key}: {ctx['error']}"
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))  # a float field's bounds come back as floats: 0 is 0.0
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return f"{key}: expected a value {_BOUNDS[kind]} {limit}, got {reprlib.repr(value)}"
    if kind == "literal_error":
        expected = f"one of {list(typing.get_args(_type_at(loc)))}"
    elif kind == "string_pattern_mismatch":
        expected = _PATTERN_WORDS.get(ctx["pattern"], f"a match of {ctx['pattern']}")
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind].format(**ctx)
    else:  # an error type this schema does not cause today: pydantic's own words
        expected = error["msg"].removeprefix("Input should be ")
    return f"{key}: expected {expected}, got {_describe(value)}"


def _type_at(loc: tuple[int | str, ...]) -> Any:
    """Returns the type that validates the value at `loc` of a pipeline YAML (no Annotated, no None)."""
    node: Any = PipelineConfig
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[str(part)].annotation
        else:  # dict[str, X] or tuple[X, ...]: X
            node = typing.get_args(node)[-1 if typing.get_origin(node) is dict else 0]
        while typing.get_origin(node) in (Annotated, Union, types.UnionType):
            node = next(arg for arg in typing.get_args(node) if arg is not type(None))
    return node
