"""Shared fixtures: example data, pipeline YAMLs in temporary dirs, a trained checkpoint, an export."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

from include.config import DEFAULT_PIPELINES_DIR, PipelineConfig, load_pipeline_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CI must be reproducible: the same fuzz cases every run (HYPOTHESIS_PROFILE=explore for random ones).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EXAMPLE_YAML = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"
#: A date after the last example partition: runs dated here see the whole data set.
AFTER_ALL_DATA = dt.date(2026, 11, 1)


def example_raw() -> dict:
    """Returns the example pipeline's YAML as a fresh dict (edit it freely)."""
    return yaml.safe_load(EXAMPLE_YAML.read_text())


def write_pipeline(directory: Path, raw: dict, filename: str | None = None) -> Path:
    """Writes a pipeline YAML into `directory` and returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or f"{raw.get('name', 'pipeline')}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """Returns a folder holding the example data partitions (written once per session)."""
    from include.data import write_example_partitions

    location = tmp_path_factory.mktemp("data") / "digits"
    write_example_partitions(location)
    return location


def make_raw(root: Path, data: Path, **overrides) -> dict:
    """Returns the example YAML pointed at `data`, with roots under `root` and top-level overrides."""
    raw = example_raw()
    raw["data"]["location"] = str(data)
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    raw.update(overrides)
    return raw


@pytest.fixture
def make_config(tmp_path, example_data):
    """Returns a factory of validated configs written to YAML files under tmp_path."""

    def factory(**overrides) -> PipelineConfig:
        raw = make_raw(tmp_path, example_data, **overrides)
        return load_pipeline_config(write_pipeline(tmp_path / "pipelines", raw))

    return factory


@pytest.fixture(scope="session")
def session_config(tmp_path_factory, example_data) -> PipelineConfig:
    """Returns the example pipeline's config on session-wide temporary roots."""
    root = tmp_path_factory.mktemp("session")
    return load_pipeline_config(write_pipeline(root / "pipelines", make_raw(root, example_data)))


@pytest.fixture(scope="session")
def trained(session_config, tmp_path_factory):
    """Returns the TrainResult of training the example pipeline once on all data."""
    from include.training import train_model

    work_dir = tmp_path_factory.mktemp("work")
    return train_model(session_config, AFTER_ALL_DATA, work_dir)


@pytest.fixture(scope="session")
def exported(session_config, trained, tmp_path_factory) -> Path:
    """Returns the directory of a complete SavedModel exported from the session's checkpoint."""
    from include.export import export_savedmodel

    target = tmp_path_factory.mktemp("export") / "20261101000000"
    export_savedmodel(session_config, trained.checkpoint, target)
    return target
