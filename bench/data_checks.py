"""Data statistics and checks: what the statistics pass costs the train step, and false positives.

`make bench`'s `data_checks` section (alone: `python -m bench.run --quick --only data_checks`).
Two figures:

- **Overhead at 1 M examples.** `train_model` on bench.scale's generated data set (1 M examples,
  build/scale-data/, generated once and reused), the softmax of bench.scale (batch 50) for 2,000
  steps and for one epoch, each with `data_checks.statistics: true` (the pass before training,
  then the data checks against the statistics of the same window as the baseline, so declared
  and inferred expectations and drift all run) and `false` (no statistics: the held-out pass
  after training reads and parses the window again). Each case in a fresh process; the four run
  side by side, their order reversed every other repeat. Reported: the wall time of
  `train_model`, the ratio on / off (target <= 1.10x), the statistics pass alone
  (`window_statistics`, in the bench's process), the peak RSS (VmHWM) of each case, and where
  the time goes (the statistics pass, the checks, the fit, the held-out pass).
- **False positives on the example data.** Each example pipeline on its data
  (tools/example_data.py), retrained daily: the run dated day d (3 .. 30 after
  EXAMPLE_FIRST_DAY: 28 runs) checks its window's statistics against those of day d - 1's run,
  as its baseline version's (each day's statistics are computed with the day before's as
  baseline, as training records them). Nothing changed in how the data is made, so every
  blocked run is a false positive. Reported: the runs that passed, the largest drift of each
  statistic with its threshold, and the cost of one `window_statistics` on the example data.

At smoke size (tests/test_bench.py) the overhead cases read 4,000 generated examples in the
temporary folder for 20 steps, and the daily retrains stop after 5 runs. `python -m
bench.data_checks --child SPEC` runs one overhead case; bench.run runs the section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.scale import AS_OF, DATA_ROOT, ENV, EXAMPLE, SOFTMAX, _peak_rss_mb, data_set
from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT

#: The overhead cases, in the order of even repeats: (name, statistics pass on, train by epochs).
CASES = (
    ("steps, statistics on", True, False),
    ("steps, statistics off", False, False),
    ("1 epoch, statistics on", True, True),
    ("1 epoch, statistics off", False, True),
)
#: The parts of train_model timed in each case (module attributes train_model looks up at call time).
PARTS = ("data_window", "_window_statistics", "_fit", "_evaluate", "held_out_sample")
BASELINE_VERSION = 1


def bench_data_checks(
    tmp: Path, size, *, examples: int = 1_000_000, days: int = 28, keep_data: bool = True
) -> None:
    """Measures both figures (see the module's docstring) into bench.run's table.

    `size`: bench.run's Size (its repeats and train_steps); `keep_data`: the generated data set in
    build/scale-data/ (reused), else in `tmp`.
    """
    overhead(tmp / "overhead", examples, size, keep_data)
    false_positives(tmp / "false-positives", days)


# --- 1. overhead of the statistics pass ----------------------------------------------------------


def case_yaml(tmp: Path, data: Path, *, statistics: bool, epochs: bool, steps: int) -> Path:
    """Writes the digits example on `data` with bench.scale's softmax, `steps` steps or 1 epoch."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["location"] = str(data)
    raw["storage"] = {"export_root": str(tmp / "exports"), "serving_root": str(tmp / "serving")}
    raw["training"].update(
        steps=None if epochs else steps,
        epochs=1 if epochs else None,
        batch_size=SOFTMAX["batch_size"],
        learning_rate=SOFTMAX["learning_rate"],
        deterministic=True,
        log_every_steps=100_000,
    )
    raw["data_checks"] = {"statistics": statistics}
    path = tmp / f"{'epoch' if epochs else 'steps'}-{'on' if statistics else 'off'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_case(spec: dict) -> dict:
    """Returns the JSON a fresh `python -m bench.data_checks --child` printed for one case."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.data_checks", "--child", json.dumps(spec)],
        env=ENV,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec: dict) -> dict:
    """Runs train_model for one case in this (fresh) process; returns its seconds, parts and peak RSS."""
    import tensorflow as tf  # noqa: F401 - imported before the clock starts, as a task process has it

    import include.train.training as training
    from include.config import load_pipeline_config
    from include.validate.data_checks import check_data

    config = load_pipeline_config(spec["config"])
    baseline = json.loads(Path(spec["baseline"]).read_text())
    result = {"rss_before_mb": _peak_rss_mb()}
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
    for name in PARTS:
        setattr(training, name, timed(name, getattr(training, name)))
    checks = timed("check_data", check_data)
    reports = []

    def check(statistics: dict) -> dict:
        reports.append(checks(config, statistics, {"version": BASELINE_VERSION, "statistics": baseline}))
        return reports[-1]

    started = time.perf_counter()
    trained = training.train_model(
        config, AS_OF, spec["work"], baseline_statistics=baseline, check_data=check
    )
    result.update(
        seconds=time.perf_counter() - started,
        steps=trained.metrics["train_steps"],
        eval_examples=trained.metrics["eval_examples"],
        checked=reports[0]["checked"] if reports else 0,
        drift_rows=sum(row["kind"] == "drift" for row in reports[0]["rows"]) if reports else 0,
        verdict=reports[0]["verdict"] if reports else None,
        parts=timings,
        peak_rss_mb=_peak_rss_mb(),
    )
    return result


def overhead(tmp: Path, examples: int, size, keep_data: bool) -> None:
    """Times train_model with the statistics pass and checks on vs off (see the module's docstring)."""
    from bench.run import ratio, record
    from include.config import load_pipeline_config
    from include.train.training import window_statistics

    tmp.mkdir(parents=True)
    repeats, steps = size.repeats, size.train_steps or SOFTMAX["steps"]
    print(f"Data statistics and checks: train_model on {examples:,} examples, on vs off", flush=True)
    data = data_set(examples, DATA_ROOT if keep_data else tmp / "scale-data")
    configs = {
        name: case_yaml(tmp, data, statistics=on, epochs=by_epoch, steps=steps)
        for name, on, by_epoch in CASES
    }
    # The baseline: the statistics of the same window (so every inferred check and drift runs).
    config = load_pipeline_config(configs[CASES[0][0]])
    baseline = tmp / "baseline.json"
    baseline.write_text(json.dumps(window_statistics(config, AS_OF)))
    base_stats = json.loads(baseline.read_text())

    samples: dict[str, list[dict]] = {name: [] for name, *_ in CASES}
    passes: list[float] = []
    order = list(samples)
    for i in range(repeats):
        started = time.perf_counter()  # in this process: TensorFlow is imported, the files are cached
        window_statistics(config, AS_OF, base_stats)
        passes.append(time.perf_counter() - started)
        for name in order if i % 2 == 0 else order[::-1]:
            work = tmp / f"work-{i}-{name.replace(' ', '-').replace(',', '')}"
            spec = {"config": str(configs[name]), "work": str(work), "baseline": str(baseline)}
            samples[name].append(run_case(spec))
        print(
            f"  repeat {i + 1}: "
            + ", ".join(f"{name} {found[-1]['seconds']:.2f} s" for name, found in samples.items())
            + f", window_statistics {passes[-1]:.2f} s",
            flush=True,
        )
    on = samples[CASES[0][0]][0]
    assert on["verdict"] == "passed" and on["drift_rows"], on  # the checks ran, drift too, and passed
    for label, by_epoch in ((f"{steps:,} steps of 50", False), ("1 epoch, batch 50", True)):
        key = "1 epoch" if by_epoch else "steps"
        with_stats, without = samples[f"{key}, statistics on"], samples[f"{key}, statistics off"]
        note = f"{with_stats[0]['steps']:,} steps; {on['checked']} checks ({on['drift_rows']} drift)"
        a = record(
            f"train_model, {label}, statistics + checks on", [s["seconds"] for s in with_stats], "s", note
        )
        b = record(
            f"train_model, {label}, statistics off",
            [s["seconds"] for s in without],
            "s",
            "",
        )
        ratio(f"train_model statistics on / off ({label})", a, b, "(target <= 1.10)")
        for side, found in (("on", with_stats), ("off", without)):
            _parts(label, side, found)
        record(f"peak RSS, {label}, statistics on", [s["peak_rss_mb"] for s in with_stats], "MB")
        record(f"peak RSS, {label}, statistics off", [s["peak_rss_mb"] for s in without], "MB")
    record(
        f"window_statistics alone, {examples:,} examples",
        passes,
        "s",
        f"{examples / min(passes):,.0f} examples/s at best; in the bench's process",
    )


def _parts(label: str, side: str, found: list[dict]) -> None:
    """Records the parts of train_model that differ between on and off; prints every part (medians)."""
    import statistics

    from bench.run import record

    names = {"_window_statistics": "statistics pass", "check_data": "checks", "_fit": "fit"}
    names.update(_evaluate="held-out pass", data_window="data_window", held_out_sample="eval sample")
    recorded = {"_window_statistics": "statistics pass", "check_data": "check_data"}
    recorded["_evaluate"] = "held-out pass (reads the cache)" if side == "on" else "held-out pass (parses)"
    shown = []
    for part, name in names.items():
        values = [s["parts"][part] for s in found if part in s["parts"]]
        if values:
            shown.append(f"{name} {statistics.median(values):.2f}")
        if values and part in recorded:
            record(f"  {label}, {side}: {recorded[part]}", values, "s")
    rest = [s["seconds"] - sum(s["parts"].values()) for s in found]
    shown.append(f"the rest (graph, session, checkpoint) {statistics.median(rest):.2f}")
    print(f"    {label}, {side}: {', '.join(shown)} s (medians)", flush=True)


# --- 2. false positives over the example data ------------------------------------------------------


def false_positives(tmp: Path, days: int) -> None:
    """Simulates `days` daily retrains of each example pipeline; counts the runs the checks blocked."""
    from bench.run import record
    from include.config import load_pipeline_config
    from include.errors import DataCheckError
    from include.train.training import window_statistics
    from include.validate.data_checks import check_data
    from tools.example_data import EXAMPLE_FIRST_DAY, EXAMPLE_PIPELINES, write_example_data

    print(f"Data checks on the example data: {days} daily retrains each, nothing changed", flush=True)
    for name in EXAMPLE_PIPELINES:
        location = tmp / name
        write_example_data(name, location)
        config = load_pipeline_config(DEFAULT_PIPELINES_DIR / f"{name}.yaml")
        data = config.data.model_copy(update={"location": str(location)})
        config = config.model_copy(update={"data": data})
        baseline, passed, seconds = None, 0, []
        largest: dict[str, tuple[float, str, str]] = {}  # drift statistic: (value, subject, threshold)
        worst: dict[tuple[str, str], float] = {}
        for day in range(2, days + 3):  # day 2 has no baseline; days 3 .. days + 2 are checked
            started = time.perf_counter()
            statistics = window_statistics(config, EXAMPLE_FIRST_DAY + dt.timedelta(days=day), baseline)
            seconds.append(time.perf_counter() - started)
            if baseline is not None:
                try:
                    report = check_data(config, statistics, {"version": day - 1, "statistics": baseline})
                    passed += 1
                except DataCheckError as err:
                    report = err.report
                    print(f"    day {day}: blocked: {str(err)[:300]}", flush=True)
                for row in report["rows"]:
                    if row["kind"] != "drift":
                        continue
                    key = (row["subject"], row["statistic"])
                    worst[key] = max(worst.get(key, 0.0), row["value"])
                    if row["value"] >= largest.get(row["statistic"], (-1.0,))[0]:
                        largest[row["statistic"]] = (row["value"], row["subject"], row["threshold"])
            baseline = statistics
        blocked = f"{days - passed} blocked"
        record(f"data checks, {name}: daily retrains passed", [passed], f"of {days}", blocked)
        for statistic, (value, subject, threshold) in sorted(largest.items()):
            limit = float(threshold.split()[-1])
            record(
                f"  {name}: largest {statistic} ({subject})",
                [value],
                "",
                f"threshold {threshold}: {value / limit:.0%} of it",
            )
        record(f"  {name}: window_statistics of the example data", seconds, "s")
        shown = [f"{subject} {statistic} {value:.3g}" for (subject, statistic), value in worst.items()]
        print(f"    largest drift per check: {', '.join(shown)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", required=True, help="one case (JSON), as bench.run's section runs it")
    args = parser.parse_args(argv)
    print(json.dumps(child(json.loads(args.child))))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
