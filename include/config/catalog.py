"""The pipelines folder: every YAML file in it, loaded, with the ones that cannot be used refused."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from include.config.claims import refuse_clashes
from include.config.loading import load_pipeline_config
from include.config.schema import DEFAULT_PIPELINES_DIR, PipelineConfig
from include.errors import ConfigError


def _pipelines_dir(directory: str | os.PathLike[str] | None) -> Path:
    """Returns the folder of pipeline files: `directory`, else $SAVEDMODEL_PIPELINES_DIR, else the default."""
    return Path(directory or os.environ.get("SAVEDMODEL_PIPELINES_DIR") or DEFAULT_PIPELINES_DIR)


def iter_pipeline_files(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Returns the pipeline YAML files in the pipelines folder, sorted by name."""
    directory = _pipelines_dir(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_all_pipelines(
    directory: str | os.PathLike[str] | None = None,
) -> tuple[list[PipelineConfig], list[ConfigError]]:
    """Returns the valid pipelines of a folder and one ConfigError per invalid or clashing file.

    Memoized on every file's path, size and mtime: the DAG modules of one parse share one read.
    """
    configs, errors = _load_all(tuple(_file_stamp(p) for p in iter_pipeline_files(directory)))
    return list(configs), list(errors)


def find_pipeline(name: str, directory: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Returns the valid pipeline called `name`, or else the one whose model is; raises ConfigError."""
    configs, errors = load_all_pipelines(directory)
    matches = [c for c in configs if c.name == name] or [c for c in configs if c.model.name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        problem = f"{name!r} is the model of several pipelines ({sorted(c.name for c in matches)}): name one"
    else:
        known = [f"{c.name} (model {c.model.name})" for c in configs]
        problem = f"no valid pipeline or model is named {name!r}; known: {', '.join(known) or 'none'}"
        if errors:
            problem += f"; invalid files: {', '.join(sorted(Path(e.path).name for e in errors))}"
    raise ConfigError(str(_pipelines_dir(directory)), [problem])


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
    loaded: list[tuple[PipelineConfig, int]] = []
    errors: list[ConfigError] = []
    for path_name, _, mtime_ns in stamp:
        try:
            loaded.append((load_pipeline_config(Path(path_name)), mtime_ns))
        except ConfigError as err:
            errors.append(err)
    # Two files sharing a DAG id, an Asset, a model dir or run work dirs: one keeps its DAG, the
    # other is refused naming both (include/config/claims.py says which, and why).
    valid, clashes = refuse_clashes(loaded)
    return tuple(valid), tuple(errors + clashes)
