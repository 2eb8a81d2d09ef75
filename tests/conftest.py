"""Shared fixtures: example data, pipeline YAMLs in temporary dirs, a trained checkpoint, an export.

Helpers (functions, constants) live in tests/helpers.py; this file holds fixtures only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from include.config import PipelineConfig, load_pipeline_config
from tests.helpers import AFTER_ALL_DATA, make_raw, write_pipeline

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CI must be reproducible: the same fuzz cases every run (HYPOTHESIS_PROFILE=explore for random ones).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """Returns a folder holding the example data partitions (written once per session)."""
    from tools.example_data import write_example_partitions

    location = tmp_path_factory.mktemp("data") / "digits"
    write_example_partitions(location)
    return location


@pytest.fixture(scope="session")
def session_config(tmp_path_factory, example_data) -> PipelineConfig:
    """Returns the example pipeline's config on session-wide temporary roots."""
    root = tmp_path_factory.mktemp("session")
    return load_pipeline_config(write_pipeline(root / "pipelines", make_raw(root, example_data)))


@pytest.fixture(scope="session")
def trained(session_config, tmp_path_factory):
    """Returns the TrainResult of training the example pipeline once on all data."""
    from include.train.training import train_model

    work_dir = tmp_path_factory.mktemp("work")
    return train_model(session_config, AFTER_ALL_DATA, work_dir)


@pytest.fixture(scope="session")
def exported(session_config, trained, tmp_path_factory) -> Path:
    """Returns the directory of a complete SavedModel exported from the session's checkpoint."""
    from include.savedmodel.export import export_savedmodel

    target = tmp_path_factory.mktemp("export") / "20261101000000"
    export_savedmodel(session_config, trained.checkpoint, target)
    return target


@pytest.fixture
def serving_root(tmp_path) -> Path:
    """Returns a serving root under tmp_path (not created: publish creates it)."""
    return tmp_path / "serving"


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    """fake-gcs-server and moto's S3 server on loopback, with connections `gcs_test` and `s3_test`."""
    from tests.buckets import object_stores

    with object_stores(tmp_path_factory.mktemp("object-stores")) as found:
        os.environ.update(found.connection_env())
        yield found


@pytest.fixture(params=["gs", "s3"])
def bucket(request, stores) -> str:
    """A fresh, empty bucket on each emulator, bound to its test connection: `gs://…` or `s3://…`."""
    from include.storage.connections import use_connection
    from tests.buckets import GCS_CONN, S3_CONN

    uri = stores.new_bucket(request.param)
    use_connection(uri, GCS_CONN if request.param == "gs" else S3_CONN)
    return uri
