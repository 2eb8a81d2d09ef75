"""The data checks against a hostile drift corpus: each case blocked with its named reason; clean data passes.

The baseline is the statistics of an example's window as of its 26th day (26 partitions); each
case rewrites the four newest partitions of the window as of the 30th day (about 59 diabetes or
240 digits examples, past `data_checks.min_drift_examples`) with one hostile change, computes
the window's statistics with the real statistics pass (`window_statistics`, the same one
`train_model` runs) and checks them with `check_data`. The slice cases train real models. What
the checks say of the examples' own day-to-day changes (28 daily retrains each) is measured in
bench/data_checks.py and asserted here: no false positive.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from include.config import SliceSpec, load_pipeline_config
from include.errors import DataCheckError, QualityGateError
from include.validate.data_checks import check_data
from include.validate.gate import check_quality
from tools.example_data import EXAMPLE_DAYS, EXAMPLE_FIRST_DAY, write_example_data

BASELINE_DAY = EXAMPLE_FIRST_DAY + dt.timedelta(days=26)  # the baseline reads dt=10-01 .. 10-26
RUN_DAY = EXAMPLE_FIRST_DAY + dt.timedelta(days=EXAMPLE_DAYS)  # the run reads .. 10-30
NEW_PARTITIONS = ("dt=2026-10-27", "dt=2026-10-28", "dt=2026-10-29", "dt=2026-10-30")
BASELINE = 20261027000000


def example_config(name: str, data: Path, **updates):
    """Returns an example pipeline's config reading `data`, with top-level sections replaced by `updates`."""
    config = load_pipeline_config(Path("include/pipelines") / f"{name}.yaml")
    return config.model_copy(update={"data": config.data.model_copy(update={"location": data}), **updates})


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Path]:
    """Both example data sets, written once."""
    root = tmp_path_factory.mktemp("examples")
    return {
        name: Path(write_example_data(name, root / name)[0]).parent
        for name in ("diabetes_keras", "digits_softmax")
    }


@pytest.fixture(scope="module")
def baselines(examples) -> dict[str, dict]:
    """Each example's baseline statistics: its window as of the 26th day."""
    from include.train.training import window_statistics

    return {
        name: window_statistics(example_config(name, data), BASELINE_DAY) for name, data in examples.items()
    }


def rewrite(data: Path, target: Path, change: Callable[[dict, int], dict | None]) -> Path:
    """Returns a copy of `data` at `target` whose new partitions went through `change(values, index)`.

    `values` maps each key of a record's tf.Example to its list of values (a dropped key is a
    missing feature); `change` returns the new values, or None to drop the record.
    """
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    from include.train.features import make_example

    shutil.copytree(data, target)
    index = 0
    for partition in NEW_PARTITIONS:
        path = target / partition / "part-00000.tfrecord"
        records = []
        for raw in tf.compat.v1.io.tf_record_iterator(str(path)):
            features = example_pb2.Example.FromString(raw).features.feature
            values = {}
            for key, feature in features.items():
                kind = feature.WhichOneof("kind")
                found = list(getattr(feature, kind).value)
                values[key] = [v.decode() for v in found] if kind == "bytes_list" else found
            changed = change(values, index)
            index += 1
            if changed is not None:
                records.append(make_example({k: v if len(v) != 1 else v[0] for k, v in changed.items()}))
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)
    return target


def scaled(key: str, factor: float):
    return lambda values, _: {**values, key: [v * factor for v in values[key]]}


def shifted(key: str, by: float):
    return lambda values, _: {**values, key: [v + by for v in values[key]]}


def every(fraction: float, change):
    """Applies `change` to that fraction of the records (deterministically: by index)."""
    step = round(1 / fraction) if fraction < 0.5 else None

    def apply(values, index):
        chosen = index % step == 0 if step else (index % 10) < round(fraction * 10)
        return change(values) if chosen else values

    return apply


def without(key: str):
    return lambda values: {k: v for k, v in values.items() if k != key}


#: case: (example, the change of the new partitions, extra config, the (subject, statistic) that blocks it)
CORPUS = {
    "a feature scaled x100": ("diabetes_keras", scaled("bmi", 100.0), {}, ("feature bmi", "max")),
    "a feature in other units (x0.01)": (
        "diabetes_keras",
        scaled("bmi", 0.01),
        {},
        ("feature bmi", "js_divergence"),
    ),
    "a shifted mean (+2 standard deviations)": (
        "diabetes_keras",
        shifted("bp", 28.0),
        {},
        ("feature bp", "js_divergence"),
    ),
    "a category gone": (
        "diabetes_keras",
        lambda values, _: {**values, "sex": ["M"]},
        {},
        ("feature sex", "linf_distance"),
    ),
    "an unseen category dominating": (
        "diabetes_keras",
        every(0.6, lambda values: {**values, "sex": ["X"]}),
        {},
        ("feature sex", "oov_fraction"),
    ),
    "a constant column": (
        "diabetes_keras",
        lambda values, _: {**values, "s5": [4.5]},
        {},
        ("feature s5", "distinct_values"),
    ),
    "a jump in the missing rate": (
        "diabetes_keras",
        every(0.6, without("s6")),
        {},
        ("feature s6", "missing_fraction"),
    ),
    "a column gone mostly default": (
        "diabetes_keras",
        every(0.8, lambda values: {**values, "s6": [91.26]}),
        {},
        ("feature s6", "default_fraction"),
    ),
    "a label in other units (x0.01)": (
        "diabetes_keras",
        scaled("target", 0.01),
        {},
        ("label target", "js_divergence"),
    ),
    "a label mix flipped to one class": (
        "digits_softmax",
        every(0.7, lambda values: {**values, "label": [1]}),
        {},
        ("label label", "linf_distance"),
    ),
    "pixels inverted": (
        "digits_softmax",
        lambda values, _: {**values, "x": [1.0 - v for v in values["x"]]},
        {},
        ("feature x", "js_divergence"),
    ),
    "a declared maximum broken by one row": (
        "diabetes_keras",
        lambda values, index: {**values, "age": [150.0]} if index == 3 else values,
        {"features": {"age": {"expect": {"max": 120.0}}}},
        ("feature age", "max"),
    ),
    "a value outside the declared values": (
        "diabetes_keras",
        lambda values, index: {**values, "sex": ["f"]} if index == 5 else values,
        {"features": {"sex": {"expect": {"values": ["F", "M"]}}}},
        ("feature sex", "unexpected_fraction"),
    ),
}


def with_features(config, changes: dict):
    """Returns `config` with feature expectations replaced as `{"features": {name: {"expect": ...}}}` says."""
    features = dict(config.features)
    for name, change in changes.get("features", {}).items():
        expect = features[name].expect.model_copy(update=change["expect"])
        features[name] = features[name].model_copy(update={"expect": expect})
    return config.model_copy(update={"features": features})


def run_case(examples, baselines, tmp_path, example, change, updates, *, force_reason=None, baseline=True):
    """Returns check_data's report of the run's window after `change` (raises DataCheckError when blocked)."""
    from include.train.training import window_statistics

    data = rewrite(examples[example], tmp_path / "data", change)
    config = with_features(example_config(example, data), updates)
    base = baselines[example]
    statistics = window_statistics(config, RUN_DAY, base)
    return check_data(
        config,
        statistics,
        {"version": BASELINE, "statistics": base} if baseline else None,
        force_reason=force_reason,
    )


@pytest.mark.parametrize("case", list(CORPUS))
def test_the_corpus_is_blocked_with_its_reason(examples, baselines, tmp_path, case):
    """Each hostile change is blocked before training, by the check that names it, in words."""
    example, change, updates, (subject, statistic) = CORPUS[case]
    with pytest.raises(DataCheckError) as raised:
        run_case(examples, baselines, tmp_path, example, change, updates)
    failed = raised.value.report["failed"]
    assert (subject, statistic) in {(row["subject"], row["statistic"]) for row in failed}, raised.value
    row = next(r for r in failed if (r["subject"], r["statistic"]) == (subject, statistic))
    assert row["verdict"] == "fail" and row["threshold"] and row["source"]
    message = str(raised.value)
    assert f"{subject}: {statistic}" in message
    if row["kind"] == "expectation":
        assert row["partition"] in NEW_PARTITIONS and f"in {row['partition']}" in message
    else:  # drift: the new data (and older partitions up to min_drift_examples) against the baseline's window
        first, last = row["partition"].split(" .. ")
        assert first == NEW_PARTITIONS[0] and last == NEW_PARTITIONS[-1]
        assert f"against version {BASELINE}" in row["detail"]


def test_unseen_values_are_named(examples, baselines, tmp_path):
    """An out-of-vocabulary failure says which values and how many."""
    example, change, updates, _ = CORPUS["a value outside the declared values"]
    with pytest.raises(DataCheckError) as raised:
        run_case(examples, baselines, tmp_path, example, change, updates)
    assert "values 'f' x1" in str(raised.value)
    assert raised.value.report["failed"][0]["source"] == "declared"


def test_unchanged_data_passes(examples, baselines, tmp_path):
    """The same new partitions, untouched, pass every check, and every kind of check ran."""
    report = run_case(examples, baselines, tmp_path, "diabetes_keras", lambda values, _: values, {})
    assert report["verdict"] == "passed" and report["failed"] == []
    kinds = {(row["kind"], row["statistic"]) for row in report["rows"]}
    assert {("drift", "js_divergence"), ("drift", "linf_distance"), ("expectation", "max")} <= kinds
    assert {("expectation", "oov_fraction"), ("expectation", "missing_fraction")} <= kinds
    assert report["checked"] == len(report["rows"]) > 40


def test_a_forced_run_records_its_failures_and_reason(examples, baselines, tmp_path):
    """Forced with a reason, a blocked window goes on; its failing rows are marked forced, the reason kept."""
    example, change, updates, (subject, statistic) = CORPUS["a feature scaled x100"]
    report = run_case(
        examples, baselines, tmp_path, example, change, updates, force_reason="units fixed upstream"
    )
    assert report["verdict"] == "forced" and report["forced_reason"] == "units fixed upstream"
    assert (subject, statistic, "forced") in {
        (r["subject"], r["statistic"], r["verdict"]) for r in report["failed"]
    }
    assert not any(row["verdict"] == "fail" for row in report["rows"])


def test_without_a_baseline_only_declared_expectations_apply(examples, baselines, tmp_path):
    """A first version (or a backfill older than the baseline) is held to what the YAML declares, no more."""
    example, change, _, _ = CORPUS["a feature scaled x100"]
    report = run_case(examples, baselines, tmp_path, example, change, {}, baseline=False)
    assert report["verdict"] == "passed"
    assert {row["source"] for row in report["rows"]} == {"declared"}  # the example declares sex's values
    example, change, updates, _ = CORPUS["a declared maximum broken by one row"]
    with pytest.raises(DataCheckError) as raised:
        run_case(examples, baselines, tmp_path / "declared", example, change, updates, baseline=False)
    assert {row["source"] for row in raised.value.report["rows"]} == {"declared"}


def test_statistics_describe_the_window(baselines):
    """The statistics pass counts what the data holds: examples, missing, vocabulary, quantiles, the label."""
    stats = baselines["diabetes_keras"]
    assert stats["examples"] == sum(p["examples"] for p in stats["by_partition"].values())
    assert len(stats["partitions"]) == 26 and stats["held_out"] < stats["examples"]
    sex = stats["features"]["sex"]
    assert sex["kind"] == "categorical" and sex["oov_fraction"] == 0.0 and sex["distinct"] == 2
    assert abs(sum(sex["frequencies"].values()) - 1.0) < 1e-9
    bmi = stats["features"]["bmi"]
    assert bmi["min"] <= bmi["quantiles"][5] <= bmi["max"] and bmi["quantiles"] == sorted(bmi["quantiles"])
    assert bmi["missing"] == 0 and bmi["nonfinite"] == 0 and 3.0 < bmi["std"] < 6.0
    digits = baselines["digits_softmax"]
    assert digits["label"]["distinct"] == 10 and digits["features"]["x"]["count"] == 64 * digits["examples"]


def test_statistics_match_numpy(examples, tmp_path):
    """Mean, std, min, max and missing match numpy on the same values; the deciles are within a rank step."""
    from include.train.training import window_statistics

    values = []
    data = rewrite(
        examples["diabetes_keras"],
        tmp_path / "data",
        lambda v, i: (values.append(v["s6"][0]), v)[1] if i % 3 else without("s6")(v),
    )
    config = example_config("diabetes_keras", data)
    stats = window_statistics(config, RUN_DAY)
    new = stats["by_partition"]
    s6 = [new[p]["features"]["s6"] for p in NEW_PARTITIONS]
    assert sum(s["missing"] for s in s6) == sum(s["examples"] for s in s6) - len(values)
    filled = np.array(values + [91.26] * sum(s["missing"] for s in s6), np.float32).astype(np.float64)
    mean = sum(s["mean"] * s["count"] for s in s6) / sum(s["count"] for s in s6)
    assert mean == pytest.approx(filled.mean(), rel=1e-9)
    assert min(s["min"] for s in s6) == filled.min() and max(s["max"] for s in s6) == filled.max()
    whole = stats["features"]["bmi"]
    assert whole["count"] == stats["examples"]


@pytest.fixture(scope="module")
def sliced(examples) -> Callable:
    """Returns a function training the diabetes example on a 2-day window, sliced by sex; (config, result)."""
    from include.train.training import train_model

    def train(data: Path, work: Path):
        config = example_config("diabetes_keras", data)
        config = config.model_copy(
            update={
                "data": config.data.model_copy(update={"window_days": 2}),
                "quality": config.quality.model_copy(
                    update={"slices": (SliceSpec(by="sex", max_loss_increase=1.0),), "max_loss": None}
                ),
                "training": config.training.model_copy(update={"epochs": 20}),
            }
        )
        return config, train_model(config, RUN_DAY, work)

    return train


def test_a_slice_that_became_empty_blocks_the_gate(examples, sliced, tmp_path):
    """Trained on a window whose women are gone, the gate refuses: the slice sex=F had examples, now none."""
    config, before = sliced(examples["diabetes_keras"], tmp_path / "before")
    assert set(before.slices["sex"]) == {"F", "M"}
    baseline = {"version": BASELINE, "metrics": before.metrics, "slices": before.slices}
    assert {r["verdict"] for r in check_quality(config, before.metrics, baseline, before.slices)} == {"pass"}
    data = rewrite(
        examples["diabetes_keras"], tmp_path / "data", lambda v, _: None if v["sex"] == ["F"] else v
    )
    _, after = sliced(data, tmp_path / "after")
    assert set(after.slices["sex"]) == {"M"}
    with pytest.raises(QualityGateError) as raised:
        check_quality(config, after.metrics, baseline, after.slices)
    assert raised.value.metric == "slice sex=F examples" and raised.value.value == 0
    assert f"version {BASELINE} had {before.slices['sex']['F']['examples']}" in raised.value.bound
    failed = [row for row in raised.value.report if row["verdict"] == "fail"]
    assert [(row["subject"], row["statistic"]) for row in failed] == [("slice sex=F", "examples")]


@pytest.mark.parametrize("example", ["diabetes_keras", "digits_softmax"])
def test_the_examples_day_to_day_changes_pass(examples, example):
    """28 daily retrains of each example, each checked against the day before's window: none is blocked.

    The examples' partitions are samples of one data set, so what the checks see is sampling
    noise; every drift stays below its threshold with room (bench/data_checks.py prints the margins).
    """
    from include.train.training import window_statistics

    config = example_config(example, examples[example])
    before = None
    largest: dict[str, float] = {}
    for day in range(2, EXAMPLE_DAYS + 1):
        statistics = window_statistics(config, EXAMPLE_FIRST_DAY + dt.timedelta(days=day), before)
        if before is not None:
            report = check_data(config, statistics, {"version": day - 1, "statistics": before})
            assert report["verdict"] == "passed", report["failed"]
            for row in report["rows"]:
                if row["kind"] == "drift":
                    key = (row["subject"], row["statistic"])
                    largest[key] = max(largest.get(key, 0.0), row["value"])
        before = statistics
    limits = {
        "js_divergence": config.data_checks.numeric_drift,
        "linf_distance": config.data_checks.categorical_drift,
    }
    assert len(largest) == len(config.features) + 1  # each feature and the label was compared
    assert all(value < 0.8 * limits[statistic] for (_, statistic), value in largest.items()), largest
