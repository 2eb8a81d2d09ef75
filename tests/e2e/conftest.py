"""Fixtures of the end-to-end tests: an isolated Airflow home (own SQLite DB, pipelines dir, roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import AirflowEnv, make_raw, write_pipeline
from tools import local_airflow
from tools.local_airflow import free_port


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, example_data) -> AirflowEnv:
    """Returns a migrated, empty Airflow home whose pipelines dir holds the example pipeline."""
    base = tmp_path_factory.mktemp("airflow")
    home, pipelines, root = base / "home", base / "pipelines", base / "store"
    home.mkdir()
    write_pipeline(pipelines, make_raw(root, example_data))
    # The same environment as a running local Airflow (`airflow dags test` uses its DB and folders).
    env = local_airflow.airflow_env(home, free_port(), extra={"SAVEDMODEL_PIPELINES_DIR": str(pipelines)})
    airflow = AirflowEnv(home, pipelines, root, env)
    airflow.run("db", "migrate")
    return airflow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A module's model store: export and serving roots of its pipelines."""
    return tmp_path_factory.mktemp("store")
