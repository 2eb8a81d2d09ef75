"""End to end (`airflow dags test`): a YAML edited while a run is in flight reaches the next run only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from include.registry.store import read_manifest
from tests.helpers import make_raw, write_pipeline

pytestmark = pytest.mark.e2e

#: A model builder that edits its own pipeline YAML the first time `train` builds the graph: the
#: quality floor becomes unreachable. Any later task that re-read the YAML would fail the gate.
_EDITING_BUILDER = """
import pathlib
import yaml
from include.train.model import softmax

PIPELINE = pathlib.Path({pipeline!r})


def builder(x, num_classes, model):
    marker = PIPELINE.with_suffix(".edited")
    if not marker.exists():
        raw = yaml.safe_load(PIPELINE.read_text())
        raw["quality"]["min_accuracy"] = 0.9999
        PIPELINE.write_text(yaml.safe_dump(raw, sort_keys=False))
        marker.touch()
    return softmax(x, num_classes, model)
"""


@pytest.fixture(scope="module")
def edited_pipeline(airflow_env, tmp_path_factory, example_data):
    """A pipeline `edited_midrun` whose builder edits its YAML during the first train; its original bytes."""
    modules = tmp_path_factory.mktemp("builders")
    raw = make_raw(airflow_env.root, example_data, name="edited_midrun")
    raw["model"].update(name="edited", builder="editing_builder:builder")
    path = write_pipeline(airflow_env.pipelines, raw)
    (modules / "editing_builder.py").write_text(_EDITING_BUILDER.format(pipeline=str(path)))
    # Prepended: the folder of airflow_local_settings (SQLite transactions) stays on the path.
    airflow_env.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(modules), airflow_env.env.get("PYTHONPATH", "")) if p
    )
    return path, path.read_bytes()


def test_yaml_edit_during_a_run_reaches_the_next_run_only(airflow_env, edited_pipeline):
    """The run that saw its YAML change publishes under the original config; the next one gets the edit."""
    path, original = edited_pipeline
    done = airflow_env.run("dags", "test", "edited_midrun", "2026-10-12T00:00:00+00:00")
    assert "state=success" in done.stdout + done.stderr
    assert path.read_bytes() != original, "the builder did not edit the YAML during train"
    model_dir = airflow_env.root / "serving" / "edited"
    entry = read_manifest(model_dir)["versions"]["20261012000000"]
    assert entry["config"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert Path(entry["config"]["snapshot"]).read_bytes() == original

    second = airflow_env.run("dags", "test", "edited_midrun", "2026-10-13T00:00:00+00:00", check=False)
    output = second.stdout + second.stderr
    assert "quality gate failed: eval_accuracy=" in output and "expected >= 0.9999" in output
    assert sorted(p.name for p in model_dir.iterdir() if p.name.isdigit()) == ["20261012000000"]
