"""The data checks: a run's window statistics against expectations and the baseline, before training.

Three kinds of check, each a row of the report (`Check`):

- **expectations declared** in the YAML (`features.<f>.expect`: min, max, values, max_missing,
  max_oov), in every partition of the window;
- **expectations inferred** from the baseline version's statistics where not declared
  (`data_checks.infer`): the baseline's range widened by `range_margin`, its values (strings
  without a vocabulary), its missing and out-of-vocabulary fractions plus a slack, its share of
  default values plus the same slack, and "not constant" where the baseline varied;
- **drift** from the baseline (TFDV's definitions): the L-infinity distance between the
  frequencies of a string feature's values (or the label's classes), and the Jensen-Shannon
  divergence (base 2, so 0..1) of a number feature's (or a float label's) histogram on the
  baseline's deciles, beside the baseline's own. The new data is the partitions the baseline's
  window did not hold, with the newest earlier ones added until there are `min_drift_examples`.

A number histogram on few examples is noisy: its deciles are merged until the new data expects
5 examples or more in each bin, and the two bins outside the baseline's range are kept apart.

Per check, the report holds one row: the worst partition when all pass, else each failing
partition (at most `_FAILED_ROWS_SHOWN`). Any failing row blocks the run (DataCheckError,
permanent), unless the run was forced with a reason: then the failing rows are marked `forced`.
NaN and infinity never get here: train refuses them as bad data, naming the file and record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from include.config import PipelineConfig
from include.errors import DataCheckError
from include.summary import describe_check
from include.train.statistics import MAX_TRACKED_VALUES

#: Failing rows of one check listed (the rest are counted in the last one's detail).
_FAILED_ROWS_SHOWN = 5
#: Examples the new data should expect in each bin of a number's drift histogram.
_EXAMPLES_PER_BIN = 5
#: A constant partition of a feature is a failure only when the baseline makes it this unlikely.
_CONSTANT_CHANCE = 1e-3


@dataclass(frozen=True)
class Check:
    """One row of a check report: what was measured, where, against what, and the verdict."""

    kind: str  # expectation | drift | metric | slice
    subject: str  # "feature bmi", "label target", "metric eval_accuracy", "slice sex=F"
    statistic: str
    value: float | int | str | None
    threshold: str
    source: str  # declared | inferred from version N | default
    verdict: str  # pass | fail | forced
    partition: str | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        """Returns the row as a plain dict (JSON)."""
        return asdict(self)


def check_data(
    config: PipelineConfig,
    statistics: dict,
    baseline: dict | None = None,
    *,
    force_reason: str | None = None,
) -> dict:
    """Returns the data checks' report of a window's statistics; raises DataCheckError if a check fails.

    `baseline` is `{"version": N, "statistics": {...}}` of the version served now, or None (the
    first version, or a backfill older than it): then only the declared expectations apply. With
    `force_reason`, failing rows are marked `forced` and the report returned.
    """
    checks = config.data_checks
    base_stats = (
        (baseline or {}).get("statistics") if checks.infer or checks.numeric_drift is not None else None
    )
    version = (baseline or {}).get("version")
    rows: list[Check] = []
    if checks.enabled:
        for name, feature in config.features.items():
            rows.extend(_expectations(config, name, feature.expect, statistics, base_stats, version))
        rows.extend(_label_expectations(config, statistics, base_stats, version))
        if base_stats:
            rows.extend(_drift(config, statistics, base_stats, version))
    failed = [row for row in rows if row.verdict == "fail"]
    if failed and force_reason:
        rows = [_forced(row) for row in rows]
    report = {
        "verdict": ("forced" if force_reason else "blocked") if failed else "passed",
        "baseline_version": version,
        "checked": len(rows),
        "failed": [row.to_dict() for row in rows if row.verdict != "pass"],
        "forced_reason": force_reason if failed and force_reason else None,
        "rows": [row.to_dict() for row in rows],
    }
    if failed and not force_reason:
        raise DataCheckError(report, [describe_check(row.to_dict()) for row in failed])
    return report


def _forced(row: Check) -> Check:
    """Returns a failing row marked forced (others unchanged)."""
    return Check(**{**row.to_dict(), "verdict": "forced"}) if row.verdict == "fail" else row


def _per_partition(
    statistics: dict,
    name: str,
    kind: str,
    subject: str,
    statistic: str,
    threshold: str,
    source: str,
    fails,
    value_of,
) -> list[Check]:
    """Returns the rows of one check over every partition: the failing ones, or the worst passing one.

    `value_of(stats)` gives a partition's value of the statistic (None: not measurable there),
    `fails(value)` whether it breaks the bound. The worst is the failing-most value (by `fails`'
    ordering: the largest for upper bounds, the smallest for lower bounds).
    """
    measured = []
    for partition, stats in statistics["by_partition"].items():
        found = stats.get("label") if name is None else stats["features"].get(name)
        value = value_of(found) if found and found.get("examples") else None
        if value is not None:
            measured.append((partition, value))
    if not measured:
        return []
    failing = [(p, v) for p, v in measured if fails(v)]
    if not failing:
        partition, value = max(measured, key=lambda pv: _badness(fails, pv[1]))
        return [Check(kind, subject, statistic, value, threshold, source, "pass", partition)]
    rows = [
        Check(kind, subject, statistic, v, threshold, source, "fail", p)
        for p, v in failing[:_FAILED_ROWS_SHOWN]
    ]
    if len(failing) > _FAILED_ROWS_SHOWN:
        last = rows[-1]
        rows[-1] = Check(
            **{**last.to_dict(), "detail": f"and {len(failing) - _FAILED_ROWS_SHOWN} more partitions"}
        )
    return rows


def _badness(fails, value) -> float:
    """Returns how close a passing value is to failing, for picking the worst partition (larger = worse)."""
    return getattr(fails, "badness", lambda v: 0.0)(value)


class _Above:
    """A bound `value <= limit` (fails above it)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, value: float) -> bool:
        return value > self.limit + 1e-12

    def badness(self, value: float) -> float:
        return value


class _Below:
    """A bound `value >= limit` (fails below it)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, value: float) -> bool:
        return value < self.limit - 1e-12

    def badness(self, value: float) -> float:
        return -value


def _expectations(config, name, expect, statistics, base_stats, version) -> list[Check]:
    """Returns the rows of one feature's declared and inferred expectations, in every partition."""
    feature = config.features[name]
    subject = f"feature {name}"
    inferred = f"inferred from version {version}"
    settings = config.data_checks
    base = (base_stats or {}).get("features", {}).get(name) if settings.infer else None
    rows: list[Check] = []

    def bound(statistic, value_of, declared, inferred_limit, cls, word):
        if declared is not None:
            limit, source = declared, "declared"
        elif inferred_limit is not None:
            limit, source = inferred_limit, inferred
        else:
            return
        rows.extend(
            _per_partition(
                statistics,
                name,
                "expectation",
                subject,
                statistic,
                f"{word} {limit:.6g}",
                source,
                cls(limit),
                value_of,
            )
        )

    if feature.dtype != "string":
        low = high = None
        if base and base.get("min") is not None:
            span = (base["max"] - base["min"]) or max(abs(base["min"]), 1.0)
            low, high = base["min"] - settings.range_margin * span, base["max"] + settings.range_margin * span
        bound("min", lambda s: s.get("min"), expect.min, low, _Below, ">=")
        bound("max", lambda s: s.get("max"), expect.max, high, _Above, "<=")
    else:
        allowed = expect.values
        source = "declared"
        if (
            allowed is None
            and base
            and feature.vocabulary is None
            and base.get("distinct", 0) < MAX_TRACKED_VALUES
        ):
            allowed, source = tuple(base.get("frequencies", {})), inferred
        if allowed is not None:
            known = set(allowed)
            limit = 0.0 if source == "declared" else settings.oov_slack
            rows.extend(
                _per_partition(
                    statistics,
                    name,
                    "expectation",
                    subject,
                    "unexpected_fraction",
                    f"<= {limit:g}",
                    source,
                    _Above(limit),
                    lambda s: _unexpected(s, known),
                )
            )
            _name_unexpected(rows, statistics, name, known)
        base_oov = base.get("oov_fraction") if base else None
        bound(
            "oov_fraction",
            lambda s: s.get("oov_fraction"),
            expect.max_oov,
            None if base_oov is None else base_oov + settings.oov_slack,
            _Above,
            "<=",
        )
        _name_unexpected(rows, statistics, name, set(feature.vocabulary or ()), statistic="oov_fraction")
    if feature.default is not None:
        base_missing = base.get("missing_fraction") if base else None
        bound(
            "missing_fraction",
            lambda s: s.get("missing_fraction"),
            expect.max_missing,
            None if base_missing is None else base_missing + settings.missing_slack,
            _Above,
            "<=",
        )
    if base:
        base_default = base.get("default_fraction")
        if base_default is not None:
            bound(
                "default_fraction",
                lambda s: s.get("default_fraction"),
                None,
                base_default + settings.missing_slack,
                _Above,
                "<=",
            )
        rows.extend(_not_constant(statistics, name, subject, base, inferred))
    return rows


def _label_expectations(config, statistics, base_stats, version) -> list[Check]:
    """Returns the label's inferred expectations: the baseline's range (float) or classes, not constant."""
    if not config.data_checks.infer or not base_stats or not base_stats.get("label"):
        return []
    base = base_stats["label"]
    subject = f"label {config.label.key}"
    inferred = f"inferred from version {version}"
    if base.get("kind") == "numeric" and base.get("min") is not None:
        margin = config.data_checks.range_margin * ((base["max"] - base["min"]) or max(abs(base["min"]), 1.0))
        low, high = base["min"] - margin, base["max"] + margin
        return [
            *_per_partition(
                statistics,
                None,
                "expectation",
                subject,
                "min",
                f">= {low:.6g}",
                inferred,
                _Below(low),
                lambda s: s.get("min"),
            ),
            *_per_partition(
                statistics,
                None,
                "expectation",
                subject,
                "max",
                f"<= {high:.6g}",
                inferred,
                _Above(high),
                lambda s: s.get("max"),
            ),
            *_not_constant(statistics, None, subject, base, inferred),
        ]
    return _not_constant(statistics, None, subject, base, inferred)


def _unexpected(stats: dict, known: set) -> float | None:
    """Returns the fraction of a partition's values outside `known`."""
    total = stats.get("count") or 0
    if not total:
        return None
    outside = sum(share for value, share in (stats.get("frequencies") or {}).items() if value not in known)
    return outside


def _name_unexpected(
    rows: list[Check], statistics: dict, name: str, known: set, statistic: str = "unexpected_fraction"
) -> None:
    """Adds to failing rows of `statistic` which values were unexpected there (the most common three)."""
    for index, row in enumerate(rows):
        if row.statistic != statistic or row.verdict != "fail" or row.partition is None or row.detail:
            continue
        found = statistics["by_partition"][row.partition]["features"][name]
        values = [(v, c) for v, c in found.get("top_values", []) if v not in known][:3]
        if values:
            shown = ", ".join(f"{v!r} x{c}" for v, c in values)
            rows[index] = Check(**{**row.to_dict(), "detail": f"values {shown}"})


def _not_constant(statistics: dict, name: str | None, subject: str, base: dict, source: str) -> list[Check]:
    """Returns the "not constant" rows: the baseline varied and a constant partition is unlikely by chance."""
    if base.get("kind") == "numeric":
        varied = (base.get("std") or 0.0) > 0
        top_share = base.get("default_fraction") or 0.0
    else:
        varied = (base.get("distinct") or 0) > 1
        top = base.get("top_values") or [[None, 0]]
        top_share = top[0][1] / base["count"] if base.get("count") else 1.0
    if not varied:
        return []

    def distinct_of(stats: dict) -> int | None:
        values = stats.get("count") or 0
        # A run of values this long is constant by chance with probability top_share ** values.
        if values < 2 or (
            top_share >= 1 or values * math.log(max(top_share, 1e-300)) > math.log(_CONSTANT_CHANCE)
        ):
            return None
        if stats.get("kind") == "numeric":
            return 1 if stats.get("min") == stats.get("max") else 2
        return stats.get("distinct")

    return _per_partition(
        statistics, name, "expectation", subject, "distinct_values", ">= 2", source, _Below(2), distinct_of
    )


def _drift(config: PipelineConfig, statistics: dict, base_stats: dict, version) -> list[Check]:
    """Returns the drift rows of each feature and the label: new partitions against the baseline's window."""
    settings = config.data_checks
    group = _new_data(statistics, base_stats, settings.min_drift_examples)
    if not group:
        return []
    where = group[0] if len(group) == 1 else f"{group[0]} .. {group[-1]}"
    rows = []
    subjects = [
        (name, f"feature {name}", f.expect.drift, f.dtype == "string") for name, f in config.features.items()
    ]
    subjects.append(
        (None, f"label {config.label.key}", config.label.drift, config.model.head != "regression")
    )
    for name, subject, declared, categorical in subjects:
        default = settings.categorical_drift if categorical else settings.numeric_drift
        limit = declared if declared is not None else default
        if limit is None:
            continue
        source = "declared" if declared is not None else "default"
        base = base_stats.get("label") if name is None else base_stats.get("features", {}).get(name)
        parts = [
            statistics["by_partition"][p].get("label")
            if name is None
            else statistics["by_partition"][p]["features"].get(name)
            for p in group
        ]
        if not base or not all(parts):
            continue
        if categorical:
            statistic, value = "linf_distance", _linf(base, parts)
        else:
            statistic, value = (
                "js_divergence",
                _js(base, parts, statistics["edges"].get(config.label.key if name is None else name)),
            )
        if value is None:
            continue
        verdict = "fail" if value > limit + 1e-12 else "pass"
        detail = (
            f"{sum(p['examples'] for p in parts)} new examples against version {version}'s {base['examples']}"
        )
        rows.append(
            Check(
                "drift", subject, statistic, round(value, 6), f"<= {limit:g}", source, verdict, where, detail
            )
        )
    return rows


def _new_data(statistics: dict, base_stats: dict, wanted: int) -> list[str]:
    """Returns the partitions drift compares: those the baseline lacked, and older ones to `wanted` in all."""
    seen = set(base_stats.get("partitions", []))
    partitions = statistics["partitions"]
    new = [p for p in partitions if p not in seen]
    older = [p for p in partitions if p in seen]
    examples = sum(statistics["by_partition"][p]["examples"] for p in new)
    while examples < wanted and older:
        partition = older.pop()
        new.insert(0, partition)
        examples += statistics["by_partition"][partition]["examples"]
    return sorted(new) if examples else []


def _linf(base: dict, parts: list[dict]) -> float | None:
    """Returns the L-infinity distance of the baseline's value frequencies and the new partitions' pooled."""
    counts: dict[str, float] = {}
    total = 0
    for part in parts:
        for value, share in (part.get("frequencies") or {}).items():
            counts[value] = counts.get(value, 0.0) + share * part["count"]
        total += part.get("count") or 0
    if not total:
        return None
    before = base.get("frequencies") or {}
    return max(abs(counts.get(v, 0.0) / total - before.get(v, 0.0)) for v in {*counts, *before})


def _js(base: dict, parts: list[dict], edges: list[float] | None) -> float | None:
    """Returns the Jensen-Shannon divergence (base 2) of the new partitions' histogram on `edges` and the
    baseline's.

    The baseline's share of each bin is read off its percentiles; inner bins are merged until the
    new data expects `_EXAMPLES_PER_BIN` in each; the two outer bins stay apart.
    """
    percentiles = base.get("percentiles")
    if not edges or not percentiles or not all(part.get("bins") for part in parts):
        return None
    counts = np.sum([np.asarray(part["bins"], np.float64) for part in parts], axis=0)
    total = counts.sum()
    if not total:
        return None
    bins = np.searchsorted(np.asarray(edges), np.asarray(percentiles), side="right")
    before = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    before /= before.sum()
    groups = _merged_bins(before, total)
    p = np.array([before[g].sum() for g in groups])
    q = np.array([counts[g].sum() / total for g in groups])
    middle = (p + q) / 2
    return float(0.5 * _kl(p, middle) + 0.5 * _kl(q, middle))


def _merged_bins(before: np.ndarray, total: float) -> list[list[int]]:
    """Returns groups of adjacent inner bins each expecting `_EXAMPLES_PER_BIN` new examples; outer: alone."""
    last = len(before) - 1
    groups, current, expected = [[0]], [], 0.0
    for index in range(1, last):
        current.append(index)
        expected += before[index] * total
        if expected >= _EXAMPLES_PER_BIN:
            groups.append(current)
            current, expected = [], 0.0
    if current:
        if len(groups) > 1:
            groups[-1] = groups[-1] + current
        else:
            groups.append(current)
    groups.append([last])
    return groups


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Returns the Kullback-Leibler divergence in bits (terms with p = 0 add nothing)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))
