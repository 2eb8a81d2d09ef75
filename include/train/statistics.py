"""Statistics of a run's data window, computed in the one pass that also splits off the held-out rows.

TensorFlow Data Validation would be the library for this, but it cannot be installed beside
TensorFlow 2.21 (docs/guarantees.md, "Data checks"), so the statistics are computed here, in the
`tf.data` pass training makes anyway: each batch of parsed records yields small per-partition
sums (graph ops, `batch_statistics`) that `WindowStatistics` adds up in Python, a few microseconds
a batch. Per feature (the values of a multi-valued feature pooled, as TFDV does):

- numbers: examples, values, missing (absent, so given the default), default fraction (values equal
  to the default, else to 0), NaN/infinity count, min, max, mean, standard deviation, and a
  quantile histogram (11 points: min, deciles, max) from `QUANTILE_POINTS` order statistics of
  an evenly strided sample of each batch's values (`SORTED_SAMPLE`), merged by weight (within
  about 1/`QUANTILE_POINTS` of the exact ranks, plus the sample's own error);
- strings: examples, missing, default fraction, the values with their frequencies (the
  `TOP_VALUES` most common kept per partition and window), distinct values seen, and the fraction
  outside the declared vocabulary;
- the label: classes and their frequencies, or a float's statistics as a number feature's.

Each partition's statistics are kept beside the window's, so a check names the partition. Drift
needs the new data's histogram on the baseline's quantile edges: `bin_edges` gives them to the
graph, which counts each partition's values per bin.

Everything is in float64 and plain ints, so the result is JSON (`to_dict`) and stored with the
version in the registry.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from include.config import PipelineConfig

#: Order statistics kept per batch and numeric feature, for the quantile histogram, taken from
#: an evenly strided sample of about this many of the batch's values.
QUANTILE_POINTS = 32
SORTED_SAMPLE = 4096
#: Weighted points kept per numeric feature once merged (compacted beyond twice this many).
_KEPT_POINTS = 4096
#: Values (and their counts) a categorical statistic keeps, most common first.
TOP_VALUES = 20
#: Distinct values tracked per partition and feature: beyond, new values are counted together.
MAX_TRACKED_VALUES = 1000
OTHER_VALUES = "__other__"
#: Quantile histogram points stored per numeric feature: min, the deciles, max; and the
#: percentiles (0..100), from which the drift check reads the share of any bin.
QUANTILES = 11
PERCENTILES = 101
FORMAT = 1


def feature_kinds(config: PipelineConfig) -> dict[str, str]:
    """Returns {feature: "numeric" | "categorical"} of the declared features."""
    return {name: "categorical" if f.dtype == "string" else "numeric" for name, f in config.features.items()}


def label_kind(config: PipelineConfig) -> str:
    """Returns "numeric" (a regression target) or "classes" (class indices, after name lookup)."""
    return "numeric" if config.model.head == "regression" else "classes"


def bin_edges(baseline: dict | None, config: PipelineConfig) -> dict[str, list[float]]:
    """Returns {feature or label key: quantile edges} of the baseline's numbers (the drift bins).

    Duplicate edges (a value holding more than a decile) are merged; a feature the baseline has no
    finite values of gets none (its drift cannot be judged).
    """
    edges: dict[str, list[float]] = {}
    if not baseline:
        return edges
    stats = {**baseline.get("features", {}), config.label.key: baseline.get("label") or {}}
    for name, kind in {**feature_kinds(config), config.label.key: label_kind(config)}.items():
        quantiles = (stats.get(name) or {}).get("quantiles")
        if kind == "numeric" and quantiles:
            edges[name] = sorted(set(float(q) for q in quantiles))
    return edges


def batch_statistics(
    config: PipelineConfig, parsed, present, label, partition, partitions: int, edges
) -> dict:
    """Returns the graph tensors of one batch's statistics, per partition (see WindowStatistics.add).

    `parsed` are the declared features (defaults filled in), `present` {feature: bool [n]} for the
    features with a default (where the example had the feature), `label` class indices or floats,
    `partition` each example's partition index.
    """
    import tensorflow as tf

    out = {"examples": tf.math.unsorted_segment_sum(tf.ones_like(partition, tf.int64), partition, partitions)}
    for name, feature in config.features.items():
        missing = None
        if name in present:
            missing = tf.math.unsorted_segment_sum(
                tf.cast(tf.logical_not(present[name]), tf.int64), partition, partitions
            )
        value = tf.reshape(parsed[name], [tf.shape(parsed[name])[0], feature.width])
        if feature.dtype == "string":
            stats = _categorical(tf, value, partition, partitions, feature.default)
        else:
            stats = _numeric(tf, value, partition, partitions, feature.default, edges.get(name))
        if missing is not None:
            stats["missing"] = missing
        out[f"feature/{name}"] = stats
    if label_kind(config) == "numeric":
        out["label"] = _numeric(
            tf, tf.reshape(label, [-1, 1]), partition, partitions, None, edges.get(config.label.key)
        )
    else:
        classes = config.model.num_classes
        index = tf.cast(partition, tf.int64) * classes + tf.cast(label, tf.int64)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, partitions * classes)
        out["label"] = {"classes": tf.reshape(counts, [partitions, classes])}
    return out


def _numeric(tf, value, partition, partitions: int, default, edges) -> dict:
    """Returns per-partition sums, extremes and counts of a [n, width] number tensor, and quantile points.

    Elementwise work is done in the feature's own dtype (float32 values are not widened), and sums
    per example in float64. NaN and infinity are counted but not masked out of the other figures:
    a window holding any is refused by train, so its other figures are never used.
    """
    if value.dtype == tf.int64:
        value = tf.cast(value, tf.float64)  # int64 values past 2**24 do not fit float32
    target = tf.constant(default if default is not None else 0, value.dtype)
    wide = tf.float64

    def per_example(values):
        return tf.math.unsorted_segment_sum(tf.cast(values, wide), partition, partitions)

    stats = {
        "sum": per_example(tf.reduce_sum(value, axis=1)),
        "sum_squares": per_example(tf.reduce_sum(value * value, axis=1)),
        "nonfinite": tf.math.unsorted_segment_sum(
            tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(value)), tf.int64), axis=1),
            partition,
            partitions,
        ),
        "defaults": tf.math.unsorted_segment_sum(
            tf.reduce_sum(tf.cast(tf.equal(value, target), tf.int64), axis=1), partition, partitions
        ),
        "min": tf.cast(
            tf.math.unsorted_segment_min(tf.reduce_min(value, axis=1), partition, partitions), wide
        ),
        "max": tf.cast(
            tf.math.unsorted_segment_max(tf.reduce_max(value, axis=1), partition, partitions), wide
        ),
    }
    flat = tf.reshape(value, [-1])
    count = tf.size(flat)
    # The order statistics come from an evenly strided sample of the batch's values: sorting all
    # of them (262,144 values of a batch of 4,096 64-wide examples) was half the pass.
    sample = tf.sort(flat[:: tf.maximum(count // SORTED_SAMPLE, 1)])
    points = tf.minimum(tf.size(sample), QUANTILE_POINTS)
    ranks = tf.cast(
        tf.round(
            tf.cast(tf.range(points), tf.float64)
            * tf.cast(tf.size(sample) - 1, tf.float64)
            / tf.cast(tf.maximum(points - 1, 1), tf.float64)
        ),
        tf.int32,
    )
    stats["points"] = tf.cast(tf.gather(sample, ranks), wide)
    stats["points_of"] = tf.cast(count, tf.int64)
    if edges:
        bins = len(edges) + 1
        # Bucketize: i where edges[i-1] <= value < edges[i] (NaN and infinity only reach here in
        # a window that train refuses anyway).
        bucket = tf.raw_ops.Bucketize(input=value, boundaries=[float(edge) for edge in edges])
        index = tf.cast(partition, tf.int64)[:, None] * bins + tf.cast(bucket, tf.int64)
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(tf.reshape(index, [-1])), tf.reshape(index, [-1]), partitions * bins
        )
        stats["bins"] = tf.reshape(counts, [partitions, bins])
    return stats


def _categorical(tf, value, partition, partitions: int, default) -> dict:
    """Returns the (partition, value) pairs of a [n, width] string tensor with their counts, and defaults."""
    width = tf.shape(value)[1]
    flat = tf.reshape(value, [-1])
    values, index = tf.unique(flat)
    rows = tf.cast(tf.repeat(partition, width), tf.int64)
    pairs, pair_index = tf.unique(rows * tf.cast(tf.size(values), tf.int64) + tf.cast(index, tf.int64))
    counts = tf.math.unsorted_segment_sum(tf.ones_like(pair_index, tf.int64), pair_index, tf.size(pairs))
    target = (default or "").encode()
    defaults = tf.reduce_sum(tf.cast(tf.equal(value, target), tf.int64), axis=1)
    return {
        "values": values,
        "pairs": pairs,
        "counts": counts,
        "defaults": tf.math.unsorted_segment_sum(defaults, partition, partitions),
    }


@dataclass
class _Numbers:
    """A number feature's running sums over one partition (or the window)."""

    values: int = 0
    missing: int = 0
    defaults: int = 0
    nonfinite: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    bins: np.ndarray | None = None

    def add(self, other: _Numbers) -> None:
        """Adds another partition's sums to these."""
        self.values += other.values
        self.missing += other.missing
        self.defaults += other.defaults
        self.nonfinite += other.nonfinite
        self.total += other.total
        self.squares += other.squares
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        if other.bins is not None:
            self.bins = other.bins.copy() if self.bins is None else self.bins + other.bins


@dataclass
class _Values:
    """A string feature's (or the classes') running counts over one partition (or the window)."""

    values: int = 0
    missing: int = 0
    defaults: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)

    def add(self, other: _Values) -> None:
        """Adds another partition's counts to these."""
        self.values += other.values
        self.missing += other.missing
        self.defaults += other.defaults
        self.counts.update(other.counts)


class WindowStatistics:
    """Adds up the per-batch statistics of a window's partitions; `to_dict` gives them as JSON."""

    def __init__(
        self, config: PipelineConfig, partitions: tuple[str, ...], edges: dict[str, list[float]]
    ) -> None:
        self.config = config
        self.partitions = tuple(partitions)
        self.edges = edges
        self.kinds = feature_kinds(config)
        self.examples = np.zeros(len(partitions), np.int64)
        self.held_out = np.zeros(len(partitions), np.int64)
        subjects = [*config.features, config.label.key]
        self._numbers = {n: [_Numbers() for _ in partitions] for n in subjects if self._kind(n) == "numeric"}
        self._values = {n: [_Values() for _ in partitions] for n in subjects if self._kind(n) != "numeric"}
        self._points: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in self._numbers}
        self._batch_examples = self.examples

    def _kind(self, name: str) -> str:
        """Returns how a feature's (or the label's) values are counted: numeric, categorical or classes."""
        return label_kind(self.config) if name == self.config.label.key else self.kinds[name]

    def add(self, batch: dict, held_out: np.ndarray | None = None) -> None:
        """Adds one batch's fetched statistics (numpy values of `batch_statistics`' tensors).

        `held_out`: how many of the batch's examples of each partition are held out.
        """
        self._batch_examples = np.asarray(batch["examples"], np.int64)
        self.examples += self._batch_examples
        if held_out is not None:
            self.held_out += held_out
        for name, feature in self.config.features.items():
            self._add(name, batch[f"feature/{name}"], feature.width)
        self._add(self.config.label.key, batch["label"], 1)

    def _add(self, name: str, stats: dict, width: int) -> None:
        """Adds one feature's (or the label's) statistics of the batch to each partition's."""
        examples = self._batch_examples
        if name in self._numbers:
            for index in np.flatnonzero(examples):  # a batch holds a few partitions of many
                numbers, rows = self._numbers[name][index], int(examples[index])
                numbers.values += rows * width
                numbers.missing += int(stats["missing"][index]) if "missing" in stats else 0
                numbers.defaults += int(stats["defaults"][index])
                numbers.nonfinite += int(stats["nonfinite"][index])
                numbers.total += float(stats["sum"][index])
                numbers.squares += float(stats["sum_squares"][index])
                numbers.low = min(numbers.low, float(stats["min"][index]))
                numbers.high = max(numbers.high, float(stats["max"][index]))
                if "bins" in stats:
                    counts = np.asarray(stats["bins"][index], np.int64)
                    numbers.bins = counts.copy() if numbers.bins is None else numbers.bins + counts
            if int(stats["points_of"]):
                points = np.asarray(stats["points"], np.float64)
                self._points[name].append(
                    (points, np.full(len(points), int(stats["points_of"]) / len(points)))
                )
                if sum(len(p) for p, _ in self._points[name]) > 2 * _KEPT_POINTS:
                    self._points[name] = [_compacted(self._points[name], _KEPT_POINTS)]
            return
        partitions = self._values[name]
        if "classes" in stats:
            for index in np.flatnonzero(examples):
                row = stats["classes"][index]
                for klass in np.flatnonzero(row):
                    partitions[index].counts[int(klass)] += int(row[klass])
                partitions[index].values += int(row.sum())
            return
        values = [v.decode("utf-8", "backslashreplace") for v in stats["values"]]
        distinct = max(len(values), 1)
        for pair, count in zip(stats["pairs"], stats["counts"], strict=True):
            index, value = divmod(int(pair), distinct)
            counter = partitions[index].counts
            key = values[value]
            if key not in counter and len(counter) >= MAX_TRACKED_VALUES:
                key = OTHER_VALUES
            counter[key] += int(count)
            partitions[index].values += int(count)
        for index in np.flatnonzero(examples):
            partitions[index].missing += int(stats["missing"][index]) if "missing" in stats else 0
            partitions[index].defaults += int(stats["defaults"][index])

    @property
    def total_examples(self) -> int:
        """Returns how many examples were added."""
        return int(self.examples.sum())

    def to_dict(self) -> dict:
        """Returns the statistics: the window's, each partition's, as plain JSON values."""
        window = {}
        by_partition: dict[str, dict] = {
            p: {"examples": int(self.examples[i]), "held_out": int(self.held_out[i]), "features": {}}
            for i, p in enumerate(self.partitions)
        }
        label = self.config.label.key
        for name in [*self.config.features, label]:
            whole = self._whole(name)
            points = self._points.get(name)
            window[name] = self._describe(name, whole, int(self.examples.sum()), points)
            for index, partition in enumerate(self.partitions):
                part = (self._numbers.get(name) or self._values[name])[index]
                described = self._describe(name, part, int(self.examples[index]), None)
                if name == label:
                    by_partition[partition]["label"] = described
                else:
                    by_partition[partition]["features"][name] = described
        return {
            "format": FORMAT,
            "examples": int(self.examples.sum()),
            "held_out": int(self.held_out.sum()),
            "partitions": list(self.partitions),
            "features": {name: window[name] for name in self.config.features},
            "label": window[label],
            "by_partition": by_partition,
            "edges": self.edges,
        }

    def _whole(self, name: str) -> _Numbers | _Values:
        """Returns a feature's (or the label's) sums over the whole window."""
        whole = _Numbers() if name in self._numbers else _Values()
        for part in self._numbers.get(name) or self._values[name]:
            whole.add(part)
        return whole

    def _describe(self, name: str, stats, examples: int, points) -> dict:
        """Returns one feature's statistics over `examples` examples (points: the quantile sample, window)."""
        feature = self.config.features.get(name)
        described: dict = {
            "kind": "numeric" if isinstance(stats, _Numbers) else "categorical",
            "examples": examples,
            "count": stats.values,
            "missing": stats.missing,
            "missing_fraction": _fraction(stats.missing, examples),
            "default_fraction": _fraction(stats.defaults, stats.values),
        }
        if isinstance(stats, _Numbers):
            finite = stats.values - stats.nonfinite
            mean = stats.total / finite if finite else None
            variance = max(stats.squares / finite - mean * mean, 0.0) if finite else None
            described.update(
                nonfinite=stats.nonfinite,
                min=stats.low if finite else None,
                max=stats.high if finite else None,
                mean=mean,
                std=math.sqrt(variance) if variance is not None else None,
                quantiles=_quantiles(points, stats.low, stats.high, QUANTILES) if points and finite else None,
                percentiles=_quantiles(points, stats.low, stats.high, PERCENTILES)
                if points and finite
                else None,
                bins=stats.bins.tolist() if stats.bins is not None else None,
            )
            return described
        counts = stats.counts
        if name == self.config.label.key:
            counts = collections.Counter({str(k): v for k, v in counts.items()})
        described.update(
            nonfinite=0,
            distinct=len(counts),
            top_values=[[value, count] for value, count in counts.most_common(TOP_VALUES)],
            frequencies=_frequencies(counts, stats.values),
            oov_fraction=None,
        )
        if feature is not None and feature.vocabulary is not None:
            known = set(feature.vocabulary)
            outside = sum(count for value, count in counts.items() if value not in known)
            described["oov_fraction"] = _fraction(outside, stats.values)
        return described


def _fraction(part: int, whole: int) -> float | None:
    """Returns part / whole, None when there is no whole."""
    return part / whole if whole else None


def _frequencies(counts: collections.Counter, total: int) -> dict[str, float]:
    """Returns each tracked value's share of the values (all of them up to MAX_TRACKED_VALUES)."""
    if not total:
        return {}
    return {str(value): count / total for value, count in counts.most_common(MAX_TRACKED_VALUES)}


def _compacted(points: list[tuple[np.ndarray, np.ndarray]], kept: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns `kept` weighted points standing for many: the values at evenly spaced weighted ranks."""
    values = np.concatenate([p for p, _ in points])
    weights = np.concatenate([w for _, w in points])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights) - weights / 2
    ranks = np.linspace(cumulative[0], cumulative[-1], kept)
    chosen = values[np.clip(np.searchsorted(cumulative, ranks), 0, len(values) - 1)]
    return chosen, np.full(kept, weights.sum() / kept)


def _quantiles(
    points: list[tuple[np.ndarray, np.ndarray]], low: float, high: float, count: int
) -> list[float] | None:
    """Returns `count` evenly spaced quantiles of the weighted points: min, ..., max (exact ends)."""
    values = np.concatenate([p for p, _ in points])
    weights = np.concatenate([w for _, w in points])
    if not len(values):
        return None
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = (np.cumsum(weights) - weights / 2) / weights.sum()
    inner = np.interp(np.linspace(0, 1, count)[1:-1], cumulative, values)
    return [float(low), *map(float, inner), float(high)]
