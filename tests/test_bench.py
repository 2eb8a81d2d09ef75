"""bench/: every section of bench.run and bench.scale runs at its smoke size and reports its figures.

Each section runs as `make bench` runs it, a real `python -m bench.run --smoke` or
`python -m bench.scale --smoke` (real TensorFlow, real Airflow for orchestration and backfill,
files in temporary dirs). A smoke run's figures measure nothing: these tests check that each
figure is there, finite and positive, never how fast it is (targets live in the benchmarks,
docs/performance.md). The runs start together, since the Airflow sections spend much of their
time waiting on the scheduler; each test waits for the run that holds its section.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from include.config import PROJECT_ROOT

# One process per group, all started at once; the two that start Airflow run apart.
GROUPS = (
    ("bench.run", ("orchestration",)),
    ("bench.run", ("backfill",)),
    ("bench.run", ("parse", "training", "export", "history", "registry")),
    ("bench.run", ("buckets",)),
    ("bench.run", ("data_checks",)),
    ("bench.scale", ("rss", "throughput")),
)

# Each section's figures at smoke size, as parts of their names.
FIGURES = {
    "parse": ["parse, 2 pipeline(s), per pipeline"],
    "orchestration": [
        "bare script",
        "airflow dags test",
        "dags test / bare script",
        "TensorFlowLocalExecutor: Airflow start",
        "TensorFlowLocalExecutor: real scheduler, trigger -> success",
        "TensorFlowLocalExecutor: real scheduler / bare script",
        "task train",
        "task validate_signatures",
        "task export_savedmodel",
        "task wait_for_version",
        "task publish_version",
        "time outside tasks",
        "import tensorflow",
    ],
    "backfill": ["1 run(s) at a time", "2 run(s) at a time", "backfill: 2 at a time / 1 at a time"],
    "training": ["pipeline train step", "Keras model.fit", "pipeline / Keras throughput"],
    "export": [
        figure.format(model=model)
        for model in ("example softmax", "MLP 64-32-32-10")
        for figure in (
            "export {model} (",  # write_savedmodel, with the number of parameters
            "export {model}, tf.saved_model.save",
            "export {model}, write_savedmodel + fsync_tree",
            "export {model}, tf.saved_model.save + fsync_tree",
            "export {model}, operator's step",
            "SavedModelBuilder / tf.saved_model.save ({model})",
            "export time, both fsynced ({model})",
            "operator's step / fsynced tf.saved_model.save ({model})",
            "variables bytes / raw parameter bytes ({model})",
        )
    ],
    "history": [
        "poke, 1 versions",
        "poke, 20 versions",
        "publish, 1 versions",
        "publish, 20 versions",
        "poke 20 / 1 versions",
        "publish 20 / 1 versions",
    ],
    "registry": ["model page, 20 versions, first look", "model page, 20 versions", "after a publish"],
    "buckets": [
        *(f"train step examples/s, {n} data" for n in ("local", "gs", "s3")),
        *(f"train from {s} / from local disk" for s in ("gs", "s3")),
        *(f"publish one version, {n}" for n in ("local", "gs", "s3")),
        *(f"publish to {s} / to local disk" for s in ("gs", "s3")),
        *(f"input_dataset examples/s, example data, {n}" for n in ("local", "gs", "s3")),
        *(f"stream_records peak RSS, {s}" for s in ("gs", "s3")),
        *(f"input_dataset held-out pass peak RSS, {n}" for n in ("local", "gs", "s3")),
    ],
    "data_checks": [
        *(
            figure.format(case=case)
            for case in ("20 steps of 50", "1 epoch, batch 50")
            for figure in (
                "train_model, {case}, statistics + checks on",
                "train_model, {case}, statistics off",
                "train_model statistics on / off ({case})",
                "{case}, on: statistics pass",
                "{case}, on: check_data",
                "{case}, on: held-out pass (reads the cache)",
                "{case}, off: held-out pass (parses)",
                "peak RSS, {case}, statistics on",
                "peak RSS, {case}, statistics off",
            )
        ),
        "window_statistics alone, 4,000 examples",
        *(
            figure.format(pipeline=pipeline)
            for pipeline in ("digits_softmax", "diabetes_keras")
            for figure in (
                "data checks, {pipeline}: daily retrains passed",
                "{pipeline}: largest js_divergence",
                "{pipeline}: largest linf_distance",
                "{pipeline}: window_statistics of the example data",
            )
        ),
    ],
    "rss": [
        "peak RSS of the train step, 1,000 examples",
        "peak RSS of the train step, 4,000 examples",
        "data_window",
        "held-out pass",
        "whole train_model",
        "peak RSS, 4,000 / 1,000 examples",
    ],
    "throughput": [
        "softmax train step",
        "bare tf.data read + parse",
        "softmax / read + parse floor",
        "deterministic: false), 2 cores",
        "Keras model.fit",
        "deterministic: true (model math on 1 thread)",
        "deterministic: false, 1 core",
        "/ Keras model.fit",
        "MLP 2 cores / 1 core",
        "deterministic: true / false",
    ],
}
AIRFLOW_SECTIONS = {"orchestration", "backfill"}


@dataclass
class BenchRun:
    """One `python -m <module> --smoke` run, started in its own process group."""

    module: str
    sections: tuple[str, ...]
    process: subprocess.Popen
    log: Path
    out: Path

    def rows(self, section: str) -> list[dict]:
        """Returns the rows of `section`, once the run has ended (it must have succeeded)."""
        rc = self.process.wait(timeout=900)
        output = self.log.read_text(errors="replace")
        assert rc == 0, f"python -m {self.module} --smoke exited {rc}:\n{output[-6000:]}"
        return [row for row in json.loads(self.out.read_text())["rows"] if row.get("section") == section]


@pytest.fixture(scope="module")
def bench_runs(request, tmp_path_factory) -> dict[str, BenchRun]:
    """Returns {section: its run}, having started at once the runs of the sections selected here."""
    selected = {
        item.callspec.params["section"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    base = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "AIRFLOW_HOME": str(base / "airflow-home")}
    runs: dict[str, BenchRun] = {}
    for i, (module, sections) in enumerate(GROUPS):
        if not selected & set(sections):
            continue
        log, out = base / f"{i}.log", base / f"{i}.json"
        command = [sys.executable, "-m", module, "--smoke", "--out", str(out)]
        if module == "bench.run":
            command += ["--only", *sections]
        with log.open("w") as stream:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=env,
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its Airflow components too, to stop them all on failure
            )
        runs.update(dict.fromkeys(sections, BenchRun(module, sections, process, log, out)))
    yield runs
    for run in {id(run): run for run in runs.values()}.values():
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()


def assert_figures(rows: list[dict], names: list[str]) -> None:
    """Asserts that each name is part of some row's name, and every figure is finite and positive."""
    found = [row["name"] for row in rows]
    missing = [name for name in names if not any(name in row for row in found)]
    assert not missing, f"figures {missing} not among {found}"
    for row in rows:
        for key in ("median", "min", "max", "ratio"):
            if key in row:
                assert math.isfinite(row[key]) and row[key] > 0, f"{row['name']}: {key} = {row[key]}"


@pytest.mark.parametrize(
    "section",
    [
        pytest.param(section, marks=[pytest.mark.e2e] if section in AIRFLOW_SECTIONS else [])
        for section in FIGURES
    ],
)
def test_section_reports_finite_positive_figures(bench_runs, section):
    """The section runs to its end at smoke size and reports each of its figures, finite and positive."""
    assert_figures(bench_runs[section].rows(section), FIGURES[section])


def test_every_section_is_tested():
    """Every section of bench.run and of bench.scale has its figures listed here."""
    from bench.run import SECTIONS

    assert set(FIGURES) == set(SECTIONS) | {"rss", "throughput"}
    assert {section for _, sections in GROUPS for section in sections} == set(FIGURES)
