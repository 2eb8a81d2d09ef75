"""Training input from a bucket: examples/s through `input_dataset` vs local disk, memory of streaming.

Usage: python -m bench.buckets [--large-examples 600000] [--repeats 3]; `make bench` runs it as its
`buckets` section.

Starts fake-gcs-server and moto's S3 server on loopback (tests/buckets.py), uploads the example
data and one large generated file (scripts/generate_scale_data.py: 600,000 examples, about 200
MB, in one object) to a bucket on each, and measures:

- examples/s of one pass of the train split of the example data through `input_dataset`, from
  local disk and from each emulator, side by side in this process (the order rotates per repeat);
- the whole train step (`train_model`) on the example data from local disk and from each bucket,
  and one publish of the same export to local disk and to each bucket (a new version each time);
- for the large file, in a fresh process per location: the peak RSS (VmHWM) after the imports,
  after streaming every record (`stream_records`, bucket only), and after a held-out pass of
  `input_dataset` over it (the whole pipeline), with the MB/s of each.

The emulators run on this machine: the figures measure this code and the emulators, not a
network. `bench_buckets(tmp, data, size)` is what bench/run.py can call as a section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT

EXAMPLE = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"
AS_OF = dt.date(2026, 11, 1)
LARGE_DAY = dt.date(2026, 10, 1)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
CONNECTIONS = {"gs": "gcs_test", "s3": "s3_test"}  # tests/buckets.py's


def pipeline_yaml(path: Path, location: str, connection: str | None = None) -> Path:
    """Writes the digits example reading `location` (deterministic: orders comparable); returns its path."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["location"] = str(location)
    if connection:
        raw["data"]["connection"] = connection
    roots = path.parent
    raw["storage"] = {"export_root": str(roots / "exports"), "serving_root": str(roots / "serving")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def input_throughput(configs: dict, repeats: int = 3, as_of: dt.date = AS_OF) -> dict[str, list[float]]:
    """Returns examples/s of one train-split pass of `input_dataset` per named config, per repeat.

    The window is listed once per config and one untimed pass each warms up (tracing, connections);
    the names take turns going first.
    """
    from include.train.data import input_dataset
    from include.train.window import data_window

    files = {name: data_window(config.data, as_of).files for name, config in configs.items()}
    names = list(configs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        for _ in input_dataset(configs[name], files[name], "train", batch_size=50, epochs=1):
            pass
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            config = configs[name]
            started = time.perf_counter()
            seen = sum(
                int(label.shape[0])
                for _, label in input_dataset(config, files[name], "train", batch_size=50, epochs=1)
            )
            samples[name].append(seen / (time.perf_counter() - started))
    return samples


def _vm(field: str) -> float:
    """Returns a /proc/self/status size (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: dict) -> dict:
    """Streams the large data set of `spec` in this (fresh) process; returns sizes, speeds and peak RSS."""
    import tensorflow as tf  # noqa: F401 - imported before the baseline, as training would

    from include.config import load_pipeline_config
    from include.storage.location import is_bucket
    from include.train.data import input_dataset
    from include.train.window import data_window, stream_records

    config = load_pipeline_config(Path(spec["config"]))
    window = data_window(config.data, LARGE_DAY + dt.timedelta(days=1))
    result = {"bytes": window.bytes, "files": len(window.files), "rss_before_mb": _vm("VmRSS")}
    if is_bucket(window.files[0]):
        started, records = time.perf_counter(), 0
        for file in window.files:
            for batch in stream_records(file):
                records += len(batch)
        result.update(
            stream_seconds=time.perf_counter() - started, stream_records=records, stream_peak_mb=_vm("VmHWM")
        )
    started, parsed = time.perf_counter(), 0
    for *_, count in input_dataset(config, window.files, "eval", batch_size=256, count=True):
        parsed += int(count)
    seconds = time.perf_counter() - started
    result.update(input_seconds=seconds, input_records=parsed, input_peak_mb=_vm("VmHWM"))
    return result


def run_child(config: Path) -> dict:
    """Returns `child`'s JSON for the pipeline YAML `config`, run in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.buckets", "--child", json.dumps({"config": str(config)})],
        env={**ENV, **{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.buckets child failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def large_data(tmp: Path, examples: int) -> Path:
    """Returns a data location of one partition holding one file of `examples` generated examples."""
    location = tmp / f"large-{examples}"
    command = [sys.executable, str(PROJECT_ROOT / "scripts" / "generate_scale_data.py"), str(location)]
    command += ["--examples", str(examples), "--days", "1", "--files-per-day", "1"]
    command += ["--first-day", LARGE_DAY.isoformat(), "--if-missing"]
    subprocess.run(command, env=ENV, capture_output=True, text=True, check=True)
    return location


def bench_buckets(tmp: Path, data: Path, size=None, *, large_examples: int = 600_000) -> list[dict]:
    """Measures the bucket input against local disk (see the module's docstring); prints and returns rows."""
    from include.config import load_pipeline_config
    from include.storage import objects
    from include.storage.connections import use_connection
    from include.storage.location import BucketURI
    from tests.buckets import object_stores

    repeats = getattr(size, "repeats", 3)
    rows: list[dict] = []
    large = large_data(tmp, large_examples)
    (tmp / "stores").mkdir(exist_ok=True)
    with object_stores(tmp / "stores") as stores:
        os.environ.update(stores.connection_env())
        configs, large_configs = {}, {"local": pipeline_yaml(tmp / "large-local" / "p.yaml", str(large))}
        configs["local"] = load_pipeline_config(pipeline_yaml(tmp / "local" / "p.yaml", str(data)))
        for scheme, conn in CONNECTIONS.items():
            bucket = BucketURI(stores.new_bucket(scheme))
            use_connection(bucket, conn)
            objects.upload_tree(data, bucket / "digits")
            objects.upload_tree(large, bucket / "large")
            path = pipeline_yaml(tmp / scheme / "p.yaml", bucket / "digits", conn)
            configs[scheme] = load_pipeline_config(path)
            large_configs[scheme] = pipeline_yaml(tmp / f"large-{scheme}" / "p.yaml", bucket / "large", conn)
        buckets = {scheme: BucketURI(str(configs[scheme].data.location)).parent for scheme in CONNECTIONS}
        rows += train_and_publish(tmp, configs, buckets, size)
        print(f"input_dataset, train split of the example data, {repeats} repeats", flush=True)
        for name, samples in input_throughput(configs, repeats).items():
            rows.append(_row(f"input_dataset examples/s, example data, {name}", samples, "examples/s"))
        print(f"Streaming one {large_examples:,}-example file (fresh process each)", flush=True)
        for name, config in large_configs.items():
            found = run_child(config)
            mb = found["bytes"] / 1e6
            note = f"{mb:.0f} MB, {found['input_records']:,} records"
            note += f"; RSS after imports {found['rss_before_mb']:.0f} MB"
            if "stream_seconds" in found:
                rows.append(
                    _row(
                        f"stream_records peak RSS, {name}",
                        [found["stream_peak_mb"]],
                        "MB",
                        f"{note}; {mb / found['stream_seconds']:.0f} MB/s",
                    )
                )
            rows.append(
                _row(
                    f"input_dataset held-out pass peak RSS, {name}",
                    [found["input_peak_mb"]],
                    "MB",
                    f"{note}; {found['input_records'] / found['input_seconds']:,.0f} examples/s",
                )
            )
    return rows


def train_and_publish(tmp: Path, configs: dict, buckets: dict, size=None) -> list[dict]:
    """Times the whole train step on local vs bucket data, and one publish to local disk vs each bucket.

    `configs`: {"local" | scheme: PipelineConfig} of the same data; `buckets`: {scheme: bucket URI}.
    The same export is published each time, as a new version (fresh, nothing to compare against).
    """
    from bench.run import ratio
    from include.registry.publish import publish_version
    from include.savedmodel.export import export_savedmodel
    from include.train.training import train_model

    repeats = getattr(size, "repeats", 3)
    steps = getattr(size, "train_steps", None) or 500
    rows: list[dict] = []
    print(f"train_model, {steps} steps, local vs bucket data, {repeats} repeats", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    trained = None
    for i in range(repeats):
        for name, config in configs.items():
            result = train_model(config, AS_OF, tmp / f"train-{name}-{i}", steps=steps)
            speeds[name].append(result.metrics["examples_per_second"])
            trained = trained or (config, result)
    train_rows = {n: _row(f"train step examples/s, {n} data", v, "examples/s") for n, v in speeds.items()}
    rows += train_rows.values()
    for scheme in buckets:
        ratio(f"train from {scheme} / from local disk", train_rows[scheme], train_rows["local"])
    config, result = trained
    export = tmp / "publish-export" / "1"
    export_savedmodel(config, result.checkpoint, export)
    roots = {"local": tmp / "publish-local", **{s: b / "serving" for s, b in buckets.items()}}
    print(f"publish_version of one export, local disk vs buckets, {repeats} repeats", flush=True)
    times: dict[str, list[float]] = {name: [] for name in roots}
    for i in range(repeats):
        for name, root in roots.items():
            started = time.perf_counter()
            publish_version(export, root, "bench", 20260101000000 + i, keep_versions=repeats + 1)
            times[name].append(time.perf_counter() - started)
    publish_rows = {n: _row(f"publish one version, {n}", v, "s") for n, v in times.items()}
    rows += publish_rows.values()
    for scheme in buckets:
        ratio(f"publish to {scheme} / to local disk", publish_rows[scheme], publish_rows["local"])
    return rows


def _row(name: str, samples: list[float], unit: str, note: str = "") -> dict:
    """Records one figure: through bench.run's table when it runs this section, printed either way."""
    from bench.run import record

    return record(name, samples, unit, note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--large-examples", type=int, default=600_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from tools.example_data import write_example_partitions

    with tempfile.TemporaryDirectory(prefix="bench-buckets-") as name:
        tmp = Path(name)
        write_example_partitions(tmp / "data")
        size = argparse.Namespace(repeats=args.repeats)
        bench_buckets(tmp, tmp / "data", size, large_examples=args.large_examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
