"""An isolated embedded Airflow (own home, SQLite DB, pipelines dir, data and model roots)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from include import local_airflow
from include.local_airflow import LocalAirflow, free_port
from tests.conftest import make_raw, write_pipeline

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class AirflowEnv:
    """A throwaway Airflow installation and the roots its pipeline writes to."""

    home: Path
    pipelines: Path
    root: Path
    env: dict

    def run(self, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Runs an `airflow` CLI command in this environment; on failure shows its output tail."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"airflow {' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-6000:]}"
            )
        return done


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


@contextlib.contextmanager
def running_airflow(home: Path, pipelines: Path) -> Iterator[LocalAirflow]:
    """Starts a local Airflow (all components, free ports) reading `pipelines`; always stops it."""
    local = LocalAirflow(
        home, port=free_port(), fast=True, extra_env={"SAVEDMODEL_PIPELINES_DIR": str(pipelines)}
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()
