"""Benchmarks: parse cost, orchestration overhead, training and export cost, publish vs history, Models page.

Every figure is a median over repeats with min and max; every ratio compares numbers measured
in this same invocation. Prints one table and writes build/bench.json.

Usage: python -m bench.run [--quick | --smoke] [--only SECTION...]

`--smoke` runs every section at the smallest size that still runs its code (one repeat, 2
pipelines to parse, 20 train steps, an MLP of 64-32-32-10 to export, 20 versions, 1 backfill
date, the project's executor only, 4,000 examples and 5 daily retrains for the data checks):
tests/test_bench.py runs it so that the bench keeps working; its figures measure nothing. Rows
carry their section's name in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT

EXAMPLE = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"
AS_OF = dt.date(2026, 11, 1)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
ROWS: list[dict] = []


@dataclass(frozen=True)
class Size:
    """How much each section measures: repeats per figure, and the sizes its figures name."""

    repeats: int
    parse_counts: tuple[int, ...] = (1, 10, 100)  # pipelines in the DAG folder
    train_steps: int | None = None  # None: the example's own (2,000)
    executors: tuple[str, ...] = ("LocalExecutor", "TensorFlowLocalExecutor")
    backfill_dates: int = 8
    mlp_hidden: tuple[int, ...] = (3200, 3200)  # the export's large model
    versions: int = 10_000  # existing versions beside which poke, publish and the page are timed
    bucket_examples: int = 600_000  # examples in the one large object streamed from each bucket
    statistics_examples: int = 1_000_000  # generated examples the statistics pass's overhead is timed on
    retrain_days: int = 28  # daily retrains of each example pipeline whose data checks are counted


FULL = Size(repeats=3)
QUICK = Size(repeats=2)
#: Every section's code at its smallest size (tests/test_bench.py): the figures mean nothing.
SMOKE = Size(
    repeats=1,
    parse_counts=(2,),  # two pipelines: the catalog's checks between files run too
    train_steps=20,
    executors=("TensorFlowLocalExecutor",),
    backfill_dates=1,
    mlp_hidden=(32, 32),
    versions=20,
    bucket_examples=2_000,
    statistics_examples=4_000,
    retrain_days=5,
)


def record(name: str, samples: list[float], unit: str = "s", note: str = "") -> dict:
    """Adds one table row (median, min, max of samples) and returns it."""
    row = {
        "name": name,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "unit": unit,
        "note": note,
    }
    ROWS.append(row)
    print(
        f"  {name}: {row['median']:.4g} {unit} "
        f"(min {row['min']:.4g}, max {row['max']:.4g}, n={row['n']}) {note}",
        flush=True,
    )
    return row


def ratio(name: str, numerator: dict, denominator: dict, target: str = "") -> None:
    """Adds a ratio row of two medians measured in this run."""
    value = numerator["median"] / denominator["median"]
    ROWS.append({"name": name, "ratio": value, "target": target})
    print(f"  {name}: {value:.3f}x {target}", flush=True)


def timed(command: list[str], env: dict | None = None, cwd: Path = PROJECT_ROOT) -> float:
    """Returns the wall time of a command (which must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env or ENV, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started


def pipeline_yaml(
    root: Path, data: Path, name: str = "digits_softmax", steps: int | None = None, **changes
) -> dict:
    """Returns the example pipeline pointed at `data`, with roots under `root` (and `steps` train steps)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.update(name=name, **changes)
    raw["data"]["location"] = str(data)
    raw["storage"] = {"export_root": str(root / "exports"), "serving_root": str(root / "serving")}
    if steps is not None:
        raw["training"]["steps"] = steps
        raw["quality"]["min_accuracy"] = 0.0  # a few steps do not reach the example's floor
    return raw


# --- 1. parse cost ------------------------------------------------------------------------------

_PARSE = """
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
parsed = time.perf_counter()
print(json.dumps({"parse": parsed - imported, "dags": len(bag.dag_ids), "errors": len(bag.import_errors),
                  "tensorflow": any(m.split(".")[0] == "tensorflow" for m in sys.modules)}))
"""


def bench_parse(tmp: Path, data: Path, size: Size) -> None:
    print("DAG parse cost", flush=True)
    for count in size.parse_counts:
        pipelines = tmp / f"pipelines-{count}"
        pipelines.mkdir()
        for i in range(count):
            raw = pipeline_yaml(tmp, data, name=f"p{i}")
            raw["model"]["name"] = f"p{i}"  # each its own model dir: pipelines may not share one
            (pipelines / f"p{i}.yaml").write_text(yaml.safe_dump(raw))
        env = {**ENV, "SAVEDMODEL_PIPELINES_DIR": str(pipelines)}
        samples, tf_seen = [], False
        for _ in range(size.repeats):
            out = subprocess.run(
                [sys.executable, "-c", _PARSE, str(PROJECT_ROOT / "dags")],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert result["errors"] == 0 and result["dags"] == count + 2, result
            samples.append(result["parse"] * 1000 / count)
            tf_seen |= result["tensorflow"]
        record(
            f"parse, {count} pipeline(s), per pipeline",
            samples,
            "ms",
            f"TensorFlow imported: {'YES' if tf_seen else 'no'}",
        )


# --- 2. orchestration overhead ------------------------------------------------------------------


def bench_orchestration(tmp: Path, data: Path, size: Size) -> None:
    print("Orchestration overhead (example pipeline, same data and steps)", flush=True)
    from tools.local_airflow import EXECUTOR, LocalAirflow, airflow_env, free_port

    pipelines = tmp / "orchestration-pipelines"
    pipelines.mkdir()
    config_path = pipelines / "digits_softmax.yaml"
    raw = pipeline_yaml(tmp / "orchestration", data, steps=size.train_steps)
    raw["quality"]["max_accuracy_drop"] = None  # every repeat publishes; no gate interplay
    config_path.write_text(yaml.safe_dump(raw))

    bare = record(
        "bare script (train + SavedModelBuilder, one process)",
        [
            timed([sys.executable, "bench/bare_tutorial.py", str(config_path), str(tmp / f"bare-{i}")])
            for i in range(size.repeats)
        ],
    )

    home = tmp / "dags-test-home"
    home.mkdir()
    env = {
        **airflow_env(home, free_port()),
        "SAVEDMODEL_PIPELINES_DIR": str(pipelines),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    timed(["airflow", "db", "migrate"], env=env)
    dags_test = record(
        "airflow dags test (5 tasks, in-process)",
        [
            timed(["airflow", "dags", "test", "digits_softmax", f"2026-11-0{i + 1}T00:00:00+00:00"], env=env)
            for i in range(size.repeats)
        ],
    )
    ratio("dags test / bare script", dags_test, bare, "(target <= 1.3)")

    from tests.e2e.airflow_api import AirflowApi

    # Before/after, side by side: plain LocalExecutor (TensorFlow imported by each task process)
    # and the project's executor (imported once, inherited by every task process).
    executors = {"LocalExecutor": "LocalExecutor", "TensorFlowLocalExecutor": EXECUTOR}
    schedulers = {}
    for label in size.executors:
        executor = executors[label]
        local = LocalAirflow(
            tmp / f"scheduler-home-{label}",
            port=free_port(),
            fast=True,
            extra_env={"SAVEDMODEL_PIPELINES_DIR": str(pipelines), "AIRFLOW__CORE__EXECUTOR": executor},
        )
        try:
            started = time.perf_counter()
            local.start()
            record(f"{label}: Airflow start (4 components, health-checked)", [time.perf_counter() - started])
            api = AirflowApi(local.url)
            api.wait_for_dag("digits_softmax")
            api.unpause("digits_softmax")
            samples, task_totals = [], {}
            for i in range(size.repeats):
                started = time.perf_counter()
                run_id = api.trigger("digits_softmax", {"version": 900 + i})
                run = api.wait_for_run("digits_softmax", run_id)
                samples.append(time.perf_counter() - started)
                assert run["state"] == "success", api.failure_report("digits_softmax", run_id)
                for ti in api.task_instances("digits_softmax", run_id):
                    task_totals.setdefault(ti["task_id"], []).append(ti["duration"] or 0.0)
            scheduler = schedulers[label] = record(f"{label}: real scheduler, trigger -> success", samples)
            ratio(f"{label}: real scheduler / bare script", scheduler, bare, "(target <= 2)")
            for task_id, durations in task_totals.items():
                record(f"  {label}: task {task_id}", durations)
            busy = statistics.median([sum(d[i] for d in task_totals.values()) for i in range(size.repeats)])
            outside = scheduler["median"] - busy
            print(f"  time outside tasks (scheduling, queueing, heartbeats): {outside:.1f} s")
            ROWS.append({"name": f"{label}: time outside tasks", "median": outside, "unit": "s"})
        finally:
            local.stop()
    if len(schedulers) == len(executors):
        ratio(
            "TensorFlowLocalExecutor / LocalExecutor run time",
            schedulers["TensorFlowLocalExecutor"],
            schedulers["LocalExecutor"],
            "(< 1: faster)",
        )
    record(
        "python -c 'import tensorflow' (paid by each task process under plain LocalExecutor)",
        [timed([sys.executable, "-c", "import tensorflow"]) for _ in range(size.repeats)],
    )


# --- 2b. backfill throughput ----------------------------------------------------------------------


def bench_backfill(tmp: Path, data: Path, size: Size) -> None:
    """Backfills dates under the real scheduler, one run at a time vs two at a time (one sample each)."""
    dates = size.backfill_dates
    print(f"Backfill throughput ({dates} dates, real scheduler, TensorFlowLocalExecutor)", flush=True)
    from tests.e2e.airflow_api import AirflowApi
    from tools.local_airflow import LocalAirflow, free_port

    pipelines = tmp / "backfill-pipelines"
    pipelines.mkdir()
    parallelism = {"backfill_p1": 1, "backfill_p2": 2}
    for name in parallelism:
        raw = pipeline_yaml(tmp / name, data, name=name, steps=size.train_steps)
        raw["model"]["name"] = name
        raw["quality"]["max_accuracy_drop"] = None
        (pipelines / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    env = {"SAVEDMODEL_PIPELINES_DIR": str(pipelines)}
    local = LocalAirflow(tmp / "backfill-home", port=free_port(), fast=True, extra_env=env)
    results = {}
    try:
        local.start()
        api = AirflowApi(local.url)
        for name in parallelism:
            api.wait_for_dag(name)
            api.unpause(name)  # runs of a paused DAG stay queued; this also schedules one run
            api.wait_for_runs(name, 1)
        for name, runs_at_once in parallelism.items():
            started = time.perf_counter()
            first = dt.date(2026, 10, 10)
            last = first + dt.timedelta(days=dates - 1)
            window = ["--from-date", first.isoformat(), "--to-date", last.isoformat()]
            local.cli("backfill", "create", "--dag-id", name, *window, "--max-active-runs", str(runs_at_once))
            runs = api.wait_for_runs(name, dates + 1, timeout=900)  # and the run unpausing made
            api.wait_for_backfills(name)
            elapsed = time.perf_counter() - started
            failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
            assert not failed, failed
            results[runs_at_once] = record(
                f"backfill {dates} dates, {runs_at_once} run(s) at a time", [elapsed], note="one sample"
            )
    finally:
        local.stop()
    ratio("backfill: 2 at a time / 1 at a time", results[2], results[1], "(< 1: faster; train pool 1 slot)")


# --- 3. training throughput vs Keras ------------------------------------------------------------


def bench_training(tmp: Path, data: Path, size: Size) -> None:
    import tensorflow as tf

    from include.config import load_pipeline_config
    from include.train.data import input_dataset
    from include.train.training import train_model
    from include.train.window import data_window

    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(pipeline_yaml(tmp / "train", data, steps=size.train_steps)))
    config = load_pipeline_config(path)
    steps, batch = config.training.steps, config.training.batch_size
    print(f"Training throughput (softmax, batch {batch}, {steps:,} steps, same tf.data input)", flush=True)
    ours = record(
        "pipeline train step",
        [
            train_model(config, AS_OF, tmp / f"train-{i}").metrics["examples_per_second"]
            for i in range(size.repeats)
        ],
        "examples/s",
    )

    # Keras reads the same tf.data input (the train split, streamed); the steps are counted alike.
    files = data_window(config.data, AS_OF).files
    samples = []
    for _ in range(size.repeats):
        train = input_dataset(config, files, "train", batch_size=batch, epochs=None)
        train = train.map(lambda features, label: (features["x"], label)).take(steps)
        model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(10, activation="softmax")])
        model.compile(
            optimizer=tf.keras.optimizers.SGD(config.training.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
        started = time.perf_counter()
        model.fit(train, epochs=1, verbose=0)
        samples.append(steps * batch / (time.perf_counter() - started))
    keras = record("Keras model.fit, same model/input/batch", samples, "examples/s")
    ratio("pipeline / Keras throughput", ours, keras, "(target >= 1.0)")


# --- 4. export cost vs tf.saved_model.save and raw bytes ----------------------------------------


def bench_export(tmp: Path, data: Path, size: Size) -> None:
    """Export of one checkpoint vs `tf.saved_model.save` of the same weights, side by side.

    Both sides write the same weights into a fresh dir; the samples alternate which side goes
    first. `write_savedmodel` and `tf.saved_model.save` leave their files in the page cache (no
    fsync), so they are compared as they are and again each followed by `fsync_tree`. The
    operator's whole step (`export_savedmodel`) also digests the checkpoint and the export and
    fsyncs before its rename; it is shown beside the fsynced `tf.saved_model.save`.
    """
    print(
        "Export: SavedModelBuilder vs tf.saved_model.save (same weights) vs raw parameter bytes", flush=True
    )
    import tensorflow as tf

    from include.config import load_pipeline_config
    from include.durable import fsync_tree
    from include.savedmodel.export import export_savedmodel, write_savedmodel
    from include.train.model import build_serving_graph

    def timed_call(write, target: Path) -> tuple[float, float, int, int]:
        """Returns (write seconds, fsync_tree seconds, variables bytes, all bytes) of one fresh write."""
        started = time.perf_counter()
        write(target)
        written = time.perf_counter()
        fsync_tree(target)
        synced = time.perf_counter()
        sizes = (_dir_bytes(target / "variables"), _dir_bytes(target))
        shutil.rmtree(target)
        return written - started, synced - written, *sizes

    mlp = f"MLP 64-{'-'.join(str(units) for units in size.mlp_hidden)}-10"
    for label, hidden in (("example softmax", None), (mlp, list(size.mlp_hidden))):
        raw = pipeline_yaml(tmp / "export", data)
        if hidden:
            raw["model"].update(builder="mlp", hidden_units=hidden)
        raw["serving"]["warmup_examples"] = 0  # compare the model alone
        path = tmp / f"export-{len(hidden or [])}.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_pipeline_config(path)
        serving = build_serving_graph(config)
        checkpoint = str(tmp / f"ckpt-{len(hidden or [])}" / "model.ckpt")
        with tf.compat.v1.Session(graph=serving.graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            # {checkpoint name: array}, in the builder's order: weights, biases of each layer in turn
            values = list(sess.run(serving.model_variables).values())
            tf.compat.v1.train.Saver(var_list=serving.model_variables).save(sess, checkpoint)
        params = sum(v.size for v in values)
        raw_bytes = sum(v.nbytes for v in values)

        samples: dict[str, list] = {"ours": [], "theirs": [], "step": []}
        for i in range(size.repeats * 3):  # sub-second each and noisy on a shared machine: more samples
            writers = {
                "ours": functools.partial(write_savedmodel, config, checkpoint),
                # the weights already in memory, as right after training in-process (not timed)
                "theirs": functools.partial(_save_with_tf, _serving_module(values)),
            }
            for side in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                samples[side].append(timed_call(writers[side], tmp / f"{side}-{label}-{i}"))
            started = time.perf_counter()
            step_dir = tmp / f"step-{label}-{i}"
            export_savedmodel(config, checkpoint, step_dir / "1")
            samples["step"].append(time.perf_counter() - started)
            shutil.rmtree(step_dir)
        *_, ours_bytes, ours_all = samples["ours"][-1]
        *_, theirs_bytes, theirs_all = samples["theirs"][-1]
        note = f"{ours_all:,} vs {theirs_all:,} bytes written"
        a = record(f"export {label} ({params:,} params), write_savedmodel", [s[0] for s in samples["ours"]])
        b = record(f"export {label}, tf.saved_model.save", [s[0] for s in samples["theirs"]], note=note)
        ratio(f"export time SavedModelBuilder / tf.saved_model.save ({label})", a, b, "(target <= 1.2)")
        a = record(f"export {label}, write_savedmodel + fsync_tree", [s[0] + s[1] for s in samples["ours"]])
        b = record(
            f"export {label}, tf.saved_model.save + fsync_tree", [s[0] + s[1] for s in samples["theirs"]]
        )
        ratio(f"export time, both fsynced ({label})", a, b, "(target <= 1.2)")
        c = record(
            f"export {label}, operator's step (export_savedmodel: digests, write, fsync, rename)",
            samples["step"],
        )
        ratio(f"operator's step / fsynced tf.saved_model.save ({label})", c, b, "(adds two SHA-256 passes)")
        ROWS.append(
            {
                "name": f"variables bytes / raw parameter bytes ({label})",
                "ratio": ours_bytes / raw_bytes,
                "target": "(target <= 1.05)",
                "note": f"{ours_bytes:,} vs {raw_bytes:,}; tf.saved_model.save {theirs_bytes:,}",
            }
        )
        print(
            f"  variables bytes {ours_bytes:,} vs raw {raw_bytes:,} ({ours_bytes / raw_bytes:.3f}x); "
            f"tf.saved_model.save {theirs_bytes:,}",
            flush=True,
        )


def _save_with_tf(module, target: Path) -> None:
    """Writes a `_serving_module` (its weights in memory) with tf.saved_model.save."""
    import tensorflow as tf

    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})


def _serving_module(values):
    import tensorflow as tf

    class ServingModule(tf.Module):
        def __init__(self, values):
            super().__init__()
            self.weights = [tf.Variable(v) for v in values]

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
        def serve(self, x):
            return _forward(self.weights, x)

    return ServingModule(values)


def _forward(weights, x):
    import tensorflow as tf

    h = x
    for i in range(0, len(weights) - 2, 2):
        h = tf.nn.relu(tf.matmul(h, weights[i]) + weights[i + 1])
    return tf.nn.softmax(tf.matmul(h, weights[-2]) + weights[-1])


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- 5. sensor and publish vs history -----------------------------------------------------------


def bench_history(tmp: Path, data: Path, size: Size) -> None:
    print(f"Sensor poke and publish with 1 vs {size.versions:,} existing versions", flush=True)
    from include.config import load_pipeline_config
    from include.registry.publish import publish_version
    from include.savedmodel.export import export_savedmodel
    from include.savedmodel.files import missing_parts
    from include.train.training import train_model

    path = tmp / "history.yaml"
    path.write_text(
        yaml.safe_dump(
            pipeline_yaml(
                tmp / "history",
                data,
                training={**yaml.safe_load(EXAMPLE.read_text())["training"], "steps": 50},
            )
        )
    )
    config = load_pipeline_config(path)
    checkpoint = train_model(config, AS_OF, tmp / "history-work").checkpoint
    export = Path(export_savedmodel(config, checkpoint, tmp / "history-export" / "1")["export_dir"])
    histories = (1, size.versions)
    for history in histories:
        model_dir = tmp / f"serving-{history}" / "digits"
        model_dir.mkdir(parents=True)
        for version in range(1, history + 1):  # hard links: 10,000 versions in seconds
            shutil.copytree(export, model_dir / str(version), copy_function=os.link)
        fill_manifest(model_dir, history)
    # The two sides take turns, sample by sample: on a shared machine whose load drifts, both see
    # the same load, and the ratio compares like with like.
    poke: dict[int, list[float]] = {history: [] for history in histories}
    for _ in range(size.repeats * 20):
        for history in histories:
            started = time.perf_counter()
            assert not missing_parts(tmp / f"serving-{history}" / "digits" / "1")
            poke[history].append((time.perf_counter() - started) * 1000)
    publish: dict[int, list[float]] = {history: [] for history in histories}
    for i in range(size.repeats * 5):  # fsync-bound, so noisy: more samples
        for history in histories:
            started = time.perf_counter()
            publish_version(
                export,
                tmp / f"serving-{history}",
                "digits",
                1_000_000 + i,
                serving_policy={"version_policy": "latest"},
            )
            publish[history].append(time.perf_counter() - started)
    results = {
        history: (
            record(f"poke, {history:,} versions", poke[history], "ms"),
            record(f"publish, {history:,} versions", publish[history]),
        )
        for history in histories
    }
    many = size.versions
    ratio(f"poke {many:,} / 1 versions", results[many][0], results[1][0], "(target: flat, ~1.0)")
    ratio(f"publish {many:,} / 1 versions", results[many][1], results[1][1], "(target: flat, ~1.0)")


def fill_manifest(model_dir: Path, history: int) -> None:
    """Records versions 1..history as published, `stable` on the oldest, `canary` on the newest."""
    from include.durable import locked
    from include.registry.store import manifest_update

    with locked(model_dir), manifest_update(model_dir) as update:  # one entry file per version
        for version in range(1, history + 1):
            entry = {"version": version, "status": "published", "metrics": {"eval_accuracy": 0.9}}
            update.put_entry(version, entry)
        update.labels.update(stable=1, canary=history)


# --- 6. the Models page over 10,000 versions ----------------------------------------------------


def bench_registry(tmp: Path, data: Path, size: Size) -> None:
    """Server-side render of a model page (chart, first page of versions, history) over many versions."""
    versions = f"{size.versions:,} versions"
    print(f"Models page of a model with {versions} (server-side render)", flush=True)
    from include.registry.page import index as registry_index
    from include.registry.page.data import ModelRef, model_page
    from include.registry.page.html import render_model

    serving = tmp / "registry"
    ref = ModelRef("digits", "digits_softmax", serving, serving / "digits", "required")
    fill_registry(ref.model_dir, size.versions)

    def render() -> float:
        started = time.perf_counter()
        html = render_model(model_page(ref), base="/registry", ui="", user="bench")
        assert "<svg" in html
        return (time.perf_counter() - started) * 1000

    cold = []
    for _ in range(size.repeats):
        registry_index._INDEXES.clear()  # a fresh API server: every entry is read once
        cold.append(render())
    warm = [render() for _ in range(size.repeats * 10)]
    after_publish = []
    for i in range(size.repeats * 2):
        fill_registry(ref.model_dir, 1, first=30_000_000_000_000 + i)
        after_publish.append(render())
    record(f"model page, {versions}, first look", cold, "ms", "(builds the in-memory index)")
    record(f"model page, {versions}", warm, "ms", "(target: <= 300 ms)")
    record(f"model page, {versions}, after a publish", after_publish, "ms", "(re-reads one entry)")


def fill_registry(model_dir: Path, count: int, first: int = 20_000_000_000_000) -> None:
    """Records `count` published versions with entries as publish_run writes them, and their label moves."""
    from include.durable import locked
    from include.registry.store import manifest_update

    partitions = [f"dt=2026-10-{day:02d}" for day in range(1, 31)]
    with locked(model_dir), manifest_update(model_dir) as update:
        for i in range(count):
            version = first + i
            update.put_entry(version, _registry_entry(version, i, partitions))
            update.labels["canary"] = version
            update.record_event(
                {"event": "label", "label": "canary", "version": version}, by="publish", reason="bench"
            )
        update.labels.setdefault("stable", first)


def _registry_entry(version: int, i: int, partitions: list[str]) -> dict:
    """Returns a published entry the size of a real one (lineage, data, signatures, metrics)."""
    tensor = {"dtype": "float32", "shape": [-1, 10]}
    return {
        "version": version,
        "status": "published",
        "dag_id": "digits_softmax",
        "run_id": f"scheduled__{version}",
        "run_type": "scheduled",
        "logical_date": "2026-11-01T00:00:00+00:00",
        "published_at": "2026-11-01T00:05:00+00:00",
        "content_digest": "d" * 64,
        "data": {"partitions": partitions, "fingerprint": "f" * 64, "files": 30, "train_examples": 1400},
        "config": {"sha256": "c" * 64, "source": "include/pipelines/digits_softmax.yaml"},
        "hyperparameters": {"steps": 2000, "batch_size": 50, "learning_rate": 0.5, "optimizer": "sgd"},
        "metrics": {"eval_accuracy": 0.95 + (i % 97) / 10_000, "eval_loss": 0.15 - (i % 89) / 10_000},
        "quality_gate": {"verdict": "passed", "baseline_version": version - 1},
        "signatures": {
            "predict_images": {
                "method": "tensorflow/serving/predict",
                "inputs": {},
                "outputs": {"scores": tensor},
            },
            "serving_default": {"method": "tensorflow/serving/classify", "outputs": {"scores": tensor}},
        },
    }


def bench_buckets(tmp: Path, data: Path, size: Size) -> None:
    import bench.run as imported  # `python -m bench.run` runs this file as __main__: a second copy
    from bench.buckets import bench_buckets as measure

    (tmp / "buckets").mkdir()
    first = len(imported.ROWS)
    measure(tmp / "buckets", data, size, large_examples=size.bucket_examples)
    if imported.ROWS is not ROWS:  # bench.buckets recorded its rows in that copy's table
        ROWS.extend(imported.ROWS[first:])


def bench_data_checks(tmp: Path, data: Path, size: Size) -> None:
    import bench.run as imported  # as in bench_buckets: bench.data_checks records into that copy's table
    from bench.data_checks import bench_data_checks as measure

    first = len(imported.ROWS)
    measure(
        tmp / "data-checks",
        size,
        examples=size.statistics_examples,
        days=size.retrain_days,
        keep_data=size is not SMOKE,  # the smoke's few examples in tmp; the 1 M set kept in build/
    )
    if imported.ROWS is not ROWS:
        ROWS.extend(imported.ROWS[first:])


SECTIONS = {
    "parse": bench_parse,
    "orchestration": bench_orchestration,
    "backfill": bench_backfill,
    "training": bench_training,
    "export": bench_export,
    "history": bench_history,
    "registry": bench_registry,
    "buckets": bench_buckets,
    "data_checks": bench_data_checks,
}


def run_section(name: str, tmp: Path, data: Path, size: Size) -> list[dict]:
    """Returns the rows one section added to ROWS (each tagged with the section's name)."""
    first = len(ROWS)
    SECTIONS[name](tmp, data, size)
    for row in ROWS[first:]:
        row["section"] = name
    return ROWS[first:]


def print_table(machine: str, seconds: float, out: Path) -> None:
    """Prints ROWS as a Markdown table."""
    print("\n| figure | median | min | max | note |\n|---|---|---|---|---|")
    for row in ROWS:
        if "ratio" in row:
            print(
                f"| {row['name']} | **{row['ratio']:.3f}x** | | | "
                f"{row.get('target', '')} {row.get('note', '')} |"
            )
        else:
            unit = row.get("unit", "")
            print(
                f"| {row['name']} | {row['median']:.4g} {unit} | {row.get('min', row['median']):.4g} | "
                f"{row.get('max', row['median']):.4g} | {row.get('note', '')} |"
            )
    print(f"\n{machine}; {seconds:.0f} s in all; JSON in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="2 repeats instead of 3 (make bench)")
    sizes.add_argument("--smoke", action="store_true", help="every section at its smallest size (tests)")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="these sections only")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "bench.json", help="the JSON")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        from tools.example_data import write_example_partitions

        data = tmp / "data"
        write_example_partitions(data)
        for name in SECTIONS:
            if not args.only or name in args.only:
                run_section(name, tmp, data, size)
    seconds = time.perf_counter() - started
    machine = f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": ROWS, "seconds": seconds}, indent=2))
    print_table(machine, seconds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
