"""Training at scale: peak memory vs data volume, throughput vs the I/O floor and Keras, cores.

Every case runs `include.train.training.train_model` (or its reference) in a fresh subprocess, on
data written by scripts/generate_scale_data.py into build/scale-data/ (reused when present with
the same parameters). The cases of one ratio run side by side in each repeat, their order
alternating, so both see the same load on a shared machine. Prints a table, writes
build/bench-scale.json.

- peak RSS (VmHWM) of the train step, softmax, 2,000 steps of 50, on 100 k vs 10 M examples;
  the time of `data_window` (which reads and hashes every byte of the window) beside it;
- softmax train-step throughput vs a bare tf.data read + parse pass over the same 1 M examples
  (same batch size, one session.run per batch; the train loop runs up to 100 steps per run);
- the built-in MLP vs Keras `model.fit` (same layers, batch, optimizer, same tf.data input);
- the MLP with `deterministic: false` pinned to 2 cores vs 1 core, and deterministic on vs off.

Usage: python -m bench.scale [--repeats N] [--skip-rss] [--smoke]

`--smoke` runs every case at the smallest size that still runs its code (1,000 and 4,000
examples in a temporary folder, 20 softmax steps, 10 MLP steps, one repeat): tests/test_bench.py
runs it so that the bench keeps working; its figures measure nothing. Rows carry their part's
name (`rss`, `throughput`) in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.run import ROWS, record
from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT

EXAMPLE = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"
DATA_ROOT = PROJECT_ROOT / "build" / "scale-data"
OUT = PROJECT_ROOT / "build" / "bench-scale.json"
GENERATOR = PROJECT_ROOT / "scripts" / "generate_scale_data.py"
#: The generated partitions are dated 2026-10-01 .. 2026-10-30: a run dated here sees all of them.
AS_OF = dt.date(2026, 11, 1)
DAYS, FILES_PER_DAY, SEED = 30, 4, 0
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

SOFTMAX = {"builder": "softmax", "batch_size": 50, "steps": 2000, "learning_rate": 0.5}
MLP = {"builder": "mlp", "hidden_units": [256, 256], "batch_size": 256, "steps": 500, "learning_rate": 0.1}


@dataclass(frozen=True)
class Size:
    """How many examples each case reads and how many steps it trains."""

    small: int = 100_000  # the RSS cases: small and large data sets
    large: int = 10_000_000
    throughput: int = 1_000_000  # the throughput cases' data set
    softmax_steps: int = SOFTMAX["steps"]
    mlp_steps: int = MLP["steps"]


FULL = Size()
#: Every case at its smallest size (tests/test_bench.py): the figures mean nothing.
SMOKE = Size(small=1_000, large=4_000, throughput=4_000, softmax_steps=20, mlp_steps=10)


def data_set(examples: int, root: Path = DATA_ROOT) -> Path:
    """Returns the folder of `examples` generated examples, generating them unless already there."""
    location = root / f"n{examples}"
    command = [sys.executable, str(GENERATOR), str(location), "--examples", str(examples)]
    command += ["--days", str(DAYS), "--files-per-day", str(FILES_PER_DAY), "--seed", str(SEED)]
    started = time.perf_counter()
    done = subprocess.run([*command, "--if-missing"], env=ENV, capture_output=True, text=True, check=True)
    print(f"  {done.stdout.strip()} [{time.perf_counter() - started:.1f} s]", flush=True)
    return location


def pipeline_yaml(tmp: Path, data: Path, model: dict, deterministic: bool = True) -> Path:
    """Writes the digits example pointed at `data`, with the model and training of `model`."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["location"] = str(data)
    raw["storage"] = {"export_root": str(tmp / "exports"), "serving_root": str(tmp / "serving")}
    raw["model"]["builder"] = model["builder"]
    if "hidden_units" in model:
        raw["model"]["hidden_units"] = model["hidden_units"]
    raw["training"].update(
        steps=model["steps"],
        batch_size=model["batch_size"],
        learning_rate=model["learning_rate"],
        deterministic=deterministic,
        log_every_steps=100_000,
    )
    name = f"{model['builder']}-{data.name}-{'det' if deterministic else 'nondet'}.yaml"
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


# --- the cases, each in a fresh process -----------------------------------------------------------


def run_case(kind: str, config: Path, work: Path, cores: list[int] | None = None) -> dict:
    """Returns the JSON a child process printed for one case (kind: train, floor, keras)."""
    spec = {"kind": kind, "config": str(config), "work": str(work), "cores": cores}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--child", json.dumps(spec)],
        env=ENV,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {config.name} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def _peak_rss_mb() -> float:
    """Returns this process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict) -> dict:
    """Runs one case in this (fresh) process and returns its figures."""
    if spec["cores"] is not None:
        os.sched_setaffinity(0, spec["cores"])  # before TensorFlow sizes its thread pools
    import tensorflow as tf

    from include.config import load_pipeline_config

    config = load_pipeline_config(spec["config"])
    result = {"cores": len(os.sched_getaffinity(0)), "rss_before_mb": _peak_rss_mb()}
    if spec["kind"] == "train":
        import include.train.training as training

        timings: dict[str, float] = {}

        def timed(name, function):
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

            return wrapper

        # Instrumentation only: the same functions, timed (train_model looks them up at call time).
        training.data_window = timed("data_window", training.data_window)
        if hasattr(training, "_evaluate"):
            training._evaluate = timed("evaluate", training._evaluate)
        started = time.perf_counter()
        trained = training.train_model(config, AS_OF, spec["work"])
        result.update(
            train_model_seconds=time.perf_counter() - started,
            examples_per_second=trained.metrics["examples_per_second"],
            train_seconds=trained.metrics["train_seconds"],
            eval_accuracy=trained.metrics.get("eval_accuracy"),
            records=trained.data["records"],
            bytes=trained.data["bytes"],
            **{f"{name}_seconds": value for name, value in timings.items()},
        )
    elif spec["kind"] == "floor":
        result.update(_floor(tf, config))
    elif spec["kind"] == "keras":
        result.update(_keras_fit(tf, config))
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _window_files(config) -> list[str]:
    """Returns the files of the window, as data_window lists them (without reading them)."""
    from include.train.window import partitions_as_of

    partitions, _ = partitions_as_of(config.data, AS_OF)
    return [str(f) for p in partitions for f in sorted(p.glob("*.tfrecord"))]


def _floor(tf, config) -> dict:
    """A bare read + parse pass: TFRecordDataset, batch, parse_example of the same spec, prefetch.

    As many records as the train step parses (its batches plus the held-out examples it drops),
    pulled one batch per session.run in a TF1 graph (as the train loop once did); no model, no shuffle.
    """
    from include.train.features import parse_spec
    from include.train.training import session_config

    training = config.training
    v1 = tf.compat.v1
    spec = parse_spec(config, with_label=True, with_id=True)
    batch = training.batch_size
    batches = training.steps * 100 // (100 - config.data.eval_percent)
    graph = tf.Graph()
    with graph.as_default():
        records = tf.data.TFRecordDataset(_window_files(config), buffer_size=1 << 20)
        parsed = records.batch(batch).map(
            lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=tf.data.AUTOTUNE
        )
        parsed = parsed.prefetch(tf.data.AUTOTUNE).take(batches)
        count = tf.size(v1.data.make_one_shot_iterator(parsed).get_next()[config.label.key])
    with v1.Session(graph=graph, config=session_config(training.deterministic)) as sess:
        seen, started = 0, time.perf_counter()
        while True:
            try:
                seen += int(sess.run(count))
            except tf.errors.OutOfRangeError:
                break
        seconds = time.perf_counter() - started
    return {"examples_per_second": seen / seconds, "records": seen, "train_seconds": seconds}


def _keras_fit(tf, config) -> dict:
    """Keras `model.fit` (eager TF2, Keras defaults) of the MLP on the pipeline's own train input."""
    import keras

    from include.train.data import input_dataset

    training, model_config = config.training, config.model
    keras.utils.set_random_seed(training.seed)
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in model_config.hidden_units]
    layers.append(keras.layers.Dense(model_config.num_classes))
    model = keras.Sequential(layers)
    optimizer = (
        keras.optimizers.Adam(training.learning_rate)
        if training.optimizer == "adam"
        else keras.optimizers.SGD(training.learning_rate)
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],  # the train step reports accuracy too
    )

    def dataset(steps: int):
        train = input_dataset(
            config, _window_files(config), "train", batch_size=training.batch_size, epochs=None
        )
        return train.map(lambda features, label: (features["x"], label)).take(steps)

    model.fit(dataset(20), epochs=1, verbose=0)  # traces (and XLA-compiles) the train step, not timed
    started = time.perf_counter()
    model.fit(dataset(training.steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    seen = training.steps * training.batch_size
    return {
        "examples_per_second": seen / seconds,
        "train_seconds": seconds,
        "jit_compile": bool(model.jit_compile),
    }


# --- the benchmark ----------------------------------------------------------------------------------


def ratio_row(name: str, numerator: dict, denominator: dict, op: str, target: float) -> dict:
    """Adds a ratio row (of two medians measured in this run) and whether it meets `op target`."""
    value = numerator["median"] / denominator["median"]
    met = value >= target if op == ">=" else value <= target
    row = {"name": name, "ratio": value, "target": f"{op} {target}", "met": met}
    ROWS.append(row)
    print(f"  {name}: {value:.3f}x (target {op} {target}: {'met' if met else 'NOT MET'})", flush=True)
    return row


def bench_rss(tmp: Path, small: Path, large: Path, size: Size = FULL) -> None:
    softmax = {**SOFTMAX, "steps": size.softmax_steps}
    steps = f"{softmax['steps']:,} steps of {softmax['batch_size']}"
    print(f"Peak RSS of the train step, softmax, {steps} (one sample each)", flush=True)
    results = {}
    for data in (small, large):
        config = pipeline_yaml(tmp, data, softmax)
        result = run_case("train", config, tmp / f"rss-{data.name}")
        label = f"{result['records']:,} examples ({result['bytes'] / 1e9:.2f} GB)"
        results[data] = record(
            f"peak RSS of the train step, {label}",
            [result["peak_rss_mb"]],
            "MB",
            f"after imports {result['rss_before_mb']:.0f} MB",
        )
        record(
            f"  data_window (hash + count every record), {label}",
            [result["data_window_seconds"]],
            "s",
            f"{result['bytes'] / 1e6 / result['data_window_seconds']:.0f} MB/s",
        )
        record(f"  held-out pass (parses every record), {label}", [result["evaluate_seconds"]], "s")
        record(f"  whole train_model, {label}", [result["train_model_seconds"]], "s")
    ratio_row(
        f"peak RSS, {_count(size.large)} / {_count(size.small)} examples",
        results[large],
        results[small],
        "<=",
        1.25,
    )


def bench_throughput(tmp: Path, data: Path, repeats: int, size: Size = FULL) -> None:
    print(
        f"Train-step throughput on {data.name[1:]} examples, cases interleaved, {repeats} repeats", flush=True
    )
    softmax = pipeline_yaml(tmp, data, {**SOFTMAX, "steps": size.softmax_steps})
    mlp = pipeline_yaml(tmp, data, {**MLP, "steps": size.mlp_steps}, deterministic=True)
    mlp_fast = pipeline_yaml(tmp, data, {**MLP, "steps": size.mlp_steps}, deterministic=False)
    usable = sorted(os.sched_getaffinity(0))
    two, one = usable[:2], usable[:1]
    if len(two) < 2:
        raise SystemExit("bench.scale needs 2 usable cores (the MLP cases are pinned to 2 cores and to 1)")
    # softmax and its floor use every core; the MLP and Keras cases are pinned to 2 cores (or 1).
    cases = {
        "softmax": ("train", softmax, None),
        "floor": ("floor", softmax, None),
        "mlp_nondet_2cores": ("train", mlp_fast, two),
        "keras_2cores": ("keras", mlp, two),
        "mlp_det_2cores": ("train", mlp, two),
        "mlp_nondet_1core": ("train", mlp_fast, one),
    }
    samples: dict[str, list[dict]] = {key: [] for key in cases}
    order = list(cases)
    for i in range(repeats):
        for key in order if i % 2 == 0 else order[::-1]:
            kind, config, cores = cases[key]
            samples[key].append(run_case(kind, config, tmp / f"{key}-{i}", cores))
        print(
            f"  repeat {i + 1}: "
            + ", ".join(f"{k} {v[-1]['examples_per_second']:,.0f}" for k, v in samples.items())
        )

    def rate(key: str, name: str, note: str = "") -> dict:
        return record(name, [s["examples_per_second"] for s in samples[key]], "examples/s", note)

    accuracy = statistics.median(s["eval_accuracy"] for s in samples["softmax"])
    s = rate("softmax", "softmax train step (batch 50, deterministic)", f"held-out accuracy {accuracy:.3f}")
    f = rate("floor", "bare tf.data read + parse, same files, batch 50", "records/s")
    ratio_row("softmax / read + parse floor", s, f, ">=", 0.7)
    jit = samples["keras_2cores"][0]["jit_compile"]
    m = rate("mlp_nondet_2cores", "MLP 64-256-256-10 train step (batch 256, deterministic: false), 2 cores")
    k = rate(
        "keras_2cores",
        "Keras model.fit, same layers/optimizer/batch/tf.data input, 2 cores",
        f"jit_compile={jit}",
    )
    d = rate("mlp_det_2cores", "MLP train step, deterministic: true (model math on 1 thread), 2 cores")
    c1 = rate("mlp_nondet_1core", "MLP train step, deterministic: false, 1 core")
    ratio_row("MLP (deterministic: false) / Keras model.fit", m, k, ">=", 1.0)
    ratio_row("MLP (deterministic: true) / Keras model.fit", d, k, ">=", 1.0)
    ratio_row("MLP 2 cores / 1 core (deterministic: false)", m, c1, ">=", 1.6)
    value = d["median"] / m["median"]
    ROWS.append({"name": "MLP throughput, deterministic: true / false (2 cores)", "ratio": value})
    print(f"  MLP throughput, deterministic: true / false (2 cores): {value:.3f}x", flush=True)


def run_section(name: str, bench, *args) -> list[dict]:
    """Returns the rows one part of the benchmark added to ROWS (each tagged with `name`)."""
    first = len(ROWS)
    bench(*args)
    for row in ROWS[first:]:
        row["section"] = name
    return ROWS[first:]


def _count(examples: int) -> str:
    """Returns a number of examples as the table names it: 100 k, 10 M, 4,000."""
    if examples >= 1_000_000 and examples % 1_000_000 == 0:
        return f"{examples // 1_000_000} M"
    if examples >= 100_000 and examples % 1_000 == 0:
        return f"{examples // 1_000} k"
    return f"{examples:,}"


def _number(value: float) -> str:
    """Returns a figure for the table: thousands separated, about 4 significant digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def print_table(machine: str, seconds: float, out: Path) -> None:
    print("\n| figure | median | min | max | n | note |\n|---|---|---|---|---|---|")
    for row in ROWS:
        if "ratio" in row:
            verdict = "" if "met" not in row else ("met" if row["met"] else "**not met**")
            target = f"target {row['target']}: {verdict}" if "target" in row else ""
            print(f"| {row['name']} | **{row['ratio']:.3f}x** | | | | {target} |")
        else:
            low, mid, high = (_number(row[key]) for key in ("min", "median", "max"))
            print(f"| {row['name']} | {mid} {row['unit']} | {low} | {high} | {row['n']} | {row['note']} |")
    print(f"\n{machine}; {seconds:.0f} s in all; JSON in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="samples per throughput case (default 3)")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the 10 M-example RSS cases")
    parser.add_argument("--smoke", action="store_true", help="every case at its smallest size (tests)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON (default {OUT})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    size, repeats = (SMOKE, 1) if args.smoke else (FULL, args.repeats)
    started = time.perf_counter()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        # The smoke's few examples are written afresh; the real sets are kept for the next run.
        root = tmp / "scale-data" if args.smoke else DATA_ROOT
        print(f"Data sets ({root}, generated once)", flush=True)
        wanted = {size.throughput} if args.skip_rss else {size.small, size.throughput, size.large}
        sets = {n: data_set(n, root) for n in sorted(wanted)}
        if not args.skip_rss:
            run_section("rss", bench_rss, tmp, sets[size.small], sets[size.large], size)
        run_section("throughput", bench_throughput, tmp, sets[size.throughput], repeats, size)
    seconds = time.perf_counter() - started
    machine = (
        f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {sys.platform}, "
        f"Python {sys.version.split()[0]}, "
        f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": ROWS, "seconds": seconds}, indent=2))
    print_table(machine, seconds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
