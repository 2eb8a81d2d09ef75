"""The data of the Models pages: every model, one model's versions, one version's lineage.

Plain dicts, the same for the HTML pages and their JSON endpoints (plugins/savedmodel_registry_app.py).
The registry is read through include/registry/store.py (the head, one entry) and the in-memory index of
include/registry/page/index.py (every version of a model); `models.config` is parsed with TF Serving's
own ModelServerConfig proto (include/registry/serving_config.py). A published version whose dir is
gone shows as `missing`, and so do the labels that point at it. A version's page adds what its data
checks and quality gate found (include/registry/checks.py) and its data statistics; a model's page
the reports of the runs those checks blocked, and the move requests that wait for an approval (from
the registry's head: include/registry/approvals.py), each with the path of its Required action.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from include.errors import ManifestError, RegistryError
from include.registry.approvals import pending_requests
from include.registry.checks import FAILING, check_rows, checks_verdict, failing_first, failing_subjects
from include.registry.page.index import model_index
from include.registry.serving_config import MODELS_CONFIG_FILE, model_config, read_models_config
from include.registry.store import (
    LABELS,
    blocked_runs,
    has_version_dir,
    read_head,
    read_statistics,
    read_version_entry,
    shown_status,
    version_dirs,
)
from include.storage.paths import as_path
from include.versions import model_dir

#: Versions per page of a model's table, and the most a page may ask for.
PER_PAGE = 50
MAX_PER_PAGE = 500
#: History events shown on a model's page (the JSON endpoint gives the same).
HISTORY_SHOWN = 100
#: The metrics the chart draws, in this order, when versions carry them.
CHART_METRICS = ("eval_accuracy", "eval_loss")
#: Reports of blocked runs shown on a model's page, newest first (the registry keeps a few more).
BLOCKED_SHOWN = 20
#: The promote DAG and its approval step: a pending request is decided on the step's Required action.
PROMOTE_DAG_ID = "savedmodel_promote"
APPROVAL_TASK_ID = "approve_stable"
#: Most frequent values of a categorical feature shown in its statistics row.
TOP_VALUES_SHOWN = 5
#: The statistics of a feature that its row shows as they are recorded.
FEATURE_STATISTICS = (
    "kind", "count", "examples", "missing", "missing_fraction", "default_fraction", "nonfinite",
    "min", "max", "mean", "std", "distinct", "oov_fraction",
)  # fmt: skip


class ModelNotFound(LookupError):
    """No pipeline publishes a model of this name (or several do, into different dirs)."""


class VersionNotFound(LookupError):
    """The model has no entry for this version."""


@dataclass(frozen=True)
class ModelRef:
    """A model as a pipeline publishes it: its name, dir, and the DAG that guards access to it."""

    name: str
    pipeline: str
    serving_root: Path
    model_dir: Path
    promotion_approval: str

    @property
    def dag_id(self) -> str:
        """Returns the id of the pipeline's DAG (Airflow authorizes reads and moves on it)."""
        return self.pipeline


def model_refs(configs) -> list[ModelRef]:
    """Returns one ModelRef per valid pipeline, sorted by model name then pipeline."""
    refs = [
        ModelRef(
            name=c.model.name,
            pipeline=c.name,
            serving_root=c.storage.serving_root,
            model_dir=model_dir(c.storage.serving_root, c.model.name),
            promotion_approval=c.serving.promotion_approval,
        )
        for c in configs
    ]
    return sorted(refs, key=lambda r: (r.name, r.pipeline))


def find_model(refs: list[ModelRef], name: str) -> ModelRef:
    """Returns the one ModelRef of model `name`; raises ModelNotFound if none or several match."""
    matches = [r for r in refs if r.name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        pipelines = ", ".join(r.pipeline for r in matches)
        raise ModelNotFound(f"model {name!r} is published by several pipelines ({pipelines})")
    raise ModelNotFound(f"no pipeline publishes a model named {name!r}")


def models_overview(refs: list[ModelRef]) -> list[dict]:
    """Returns one row per model: labels, newest version, its held-out metrics, versions on disk."""
    return [model_row(ref) for ref in refs]


def model_row(ref: ModelRef) -> dict:
    """Returns a model's row of the Models list (reads its head and one entry, whatever its size)."""
    head = read_head(ref.model_dir)
    newest = head["newest"]
    last = newest[-1] if newest else None
    entry = read_version_entry(ref.model_dir, last) if last is not None else None
    metrics = (entry or {}).get("metrics") or {}
    labels = {label: head["labels"].get(label) for label in LABELS}
    return {
        **_ref_fields(ref),
        "labels": labels,
        "missing_labels": missing_labels(ref.model_dir, labels),
        "newest_version": last,
        "newest_published_at": (entry or {}).get("published_at"),
        "newest_accuracy": metrics.get("eval_accuracy"),
        "newest_loss": metrics.get("eval_loss"),
        "versions_on_disk": len(version_dirs(ref.model_dir)),
    }


def missing_labels(directory: Path, labels: dict[str, int | None]) -> dict[str, int]:
    """Returns the labels whose version's dir is gone: kept in the registry, left out of models.config."""
    return {
        label: version
        for label, version in labels.items()
        if version is not None and not has_version_dir(directory, version)
    }


def model_page(ref: ModelRef, page: int = 1, per_page: int = PER_PAGE) -> dict:
    """Returns one page of a model's versions (newest first), its labels, chart series and history."""
    index = model_index(ref.model_dir)
    versions = index.versions()
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    pages = max(1, math.ceil(len(versions) / per_page))
    page = min(max(1, page), pages)
    labels = {label: index.head.get("labels", {}).get(label) for label in LABELS}
    rows = [
        {**row, "labels": [label for label, v in labels.items() if v == row["version"]]}
        for row in versions[(page - 1) * per_page : page * per_page]
    ]
    return {
        **_ref_fields(ref),
        "labels": labels,
        "missing_labels": {k: v for k, v in labels.items() if v is not None and v in index.missing()},
        "missing": sorted(index.missing()),
        "serving": index.head.get("serving", {}),
        "total": len(versions),
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "versions": rows,
        "history": index.history()[:HISTORY_SHOWN],
        "blocked": [blocked_row(report) for report in blocked_runs(ref.model_dir, BLOCKED_SHOWN)],
        "pending": [pending_row(request) for request in pending_requests(index.head)],
        "series": chart_series(versions),
    }


def pending_row(request: dict) -> dict:
    """Returns a request that waits for an approval, with the UI path where it is decided (`decide_path`)."""
    run = quote(str(request.get("run_id")), safe="")
    return {
        **request,
        "merged": [m for m in request.get("merged") or [] if isinstance(m, dict)],
        "decide_path": f"/dags/{PROMOTE_DAG_ID}/runs/{run}/tasks/{APPROVAL_TASK_ID}/required_actions",
    }


def blocked_row(report: dict) -> dict:
    """Returns a blocked run's report with its failing rows (`failing`), failed before forced."""
    if not isinstance(report, dict):
        return {"error": f"unreadable report: {report!r}"[:200], "failing": []}
    failing = [row for row in check_rows(report.get("report")) if row.get("verdict") in FAILING]
    return {**report, "failing": failing_first(failing)}


def chart_series(versions: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Returns {metric: [(version, value), ...] oldest first} for the charted metrics present."""
    series: dict[str, list[tuple[int, float]]] = {}
    for metric in CHART_METRICS:
        points = [(v["version"], v["metrics"][metric]) for v in reversed(versions) if metric in v["metrics"]]
        if points:
            series[metric] = points
    return series


def version_page(ref: ModelRef, version: int) -> dict:
    """Returns a version's entry (lineage, signatures, digest), labels and how TF Serving serves it."""
    entry = read_version_entry(ref.model_dir, version)
    if entry is None:
        raise VersionNotFound(f"model {ref.name!r} has no version {version}")
    head = read_head(ref.model_dir)
    labels = [label for label in LABELS if head["labels"].get(label) == version]
    on_disk = has_version_dir(ref.model_dir, version)
    serving = serving_entry(ref.serving_root, ref.name, version, head["newest"])
    try:
        statistics, statistics_problem = read_statistics(ref.model_dir, entry), None
    except ManifestError as err:  # the page still shows the rest of the version
        statistics, statistics_problem = None, str(err)
    report = check_report(entry, statistics)
    return {
        **_ref_fields(ref),
        "version": version,
        "entry": entry,
        "status": shown_status(entry.get("status"), on_disk),
        "labels": labels,
        "current": {label: head["labels"].get(label) for label in LABELS},
        "serving": {**serving, "served": serving["served"] and on_disk},
        "verdict": checks_verdict(entry),
        "forced_reason": forced_reason(entry),
        "data_checks": _dict_or_none(entry.get("data_checks")),
        "quality_gate": _dict_or_none(entry.get("quality_gate")),
        "report": report,
        "slices": slice_table(entry.get("slices"), report),
        "statistics": statistics_summary(statistics, report),
        "statistics_problem": statistics_problem,
    }


def forced_reason(entry: dict) -> str | None:
    """Returns why a version was published despite failing checks (None unless one was forced)."""
    data_checks = _dict(entry.get("data_checks"))
    if data_checks.get("verdict") != "forced" and _dict(entry.get("quality_gate")).get("verdict") != "forced":
        return None
    return data_checks.get("forced_reason") or entry.get("force_reason") or "no reason recorded"


def check_report(entry: dict, statistics: dict | None) -> list[dict]:
    """Returns every check row of a version, failing then forced rows first.

    The data checks' whole report is kept with the statistics; the entry records their failed rows
    (with the verdict the run gave them: `forced` when forced) and the quality gate's rows. A row
    found twice (same kind, subject, statistic, partition) is shown once, as the entry has it.
    """
    rows: dict[tuple, dict] = {}
    sources = (
        _dict(statistics).get("report"),
        _dict(entry.get("data_checks")).get("failed"),
        _dict(entry.get("quality_gate")).get("checks"),
    )
    for source in sources:
        for row in check_rows(source):
            key = tuple(str(row.get(k)) for k in ("kind", "subject", "statistic", "partition"))
            rows[key] = row
    return failing_first(rows.values())


def slice_table(slices: object, report: list[dict]) -> dict:
    """Returns the per-slice metrics as rows (slice, key, examples, metrics) and the metric columns."""
    failing = failing_subjects(report)
    rows, metrics = [], []
    for name, keys in _dict(slices).items():
        for key, values in _dict(keys).items():
            values = _dict(values)
            shown = {k: v for k, v in values.items() if k != "examples"}
            metrics += [k for k in shown if k not in metrics]
            rows.append(
                {
                    "slice": name,
                    "key": key,
                    "examples": values.get("examples"),
                    "metrics": shown,
                    "failing": f"slice {name}={key}" in failing,
                }
            )
    charted = [m for m in CHART_METRICS if m in metrics]
    return {"metrics": charted + sorted(m for m in metrics if m not in charted), "rows": rows}


def statistics_summary(statistics: dict | None, report: list[dict]) -> dict | None:
    """Returns a version's data statistics as one row per feature (and per partition), or None."""
    if not isinstance(statistics, dict):
        return None
    failing = failing_subjects(report)
    label_failing = any(subject.startswith("label ") for subject in failing)

    def rows(part: dict) -> list[dict]:
        features = [
            feature_row(name, stats, failing=f"feature {name}" in failing)
            for name, stats in _dict(part.get("features")).items()
        ]
        label = part.get("label")
        return features + ([feature_row("label", label, failing=label_failing, label=True)] if label else [])

    return {
        "examples": statistics.get("examples"),
        "partitions": [str(p) for p in statistics.get("partitions") or []],
        "features": rows(statistics),
        "by_partition": [
            {"partition": partition, "examples": _dict(part).get("examples"), "features": rows(_dict(part))}
            for partition, part in sorted(_dict(statistics.get("by_partition")).items())
        ],
    }


def feature_row(name: str, stats: object, *, failing: bool = False, label: bool = False) -> dict:
    """Returns one feature's statistics row: counts, range, median, the most frequent values."""
    stats = _dict(stats)
    quantiles = stats.get("quantiles")
    top = [t for t in stats.get("top_values") or [] if isinstance(t, list | tuple) and len(t) == 2]
    return {
        "name": name,
        "label": label,
        "failing": failing,
        **{key: stats.get(key) for key in FEATURE_STATISTICS},
        "median": quantiles[len(quantiles) // 2] if isinstance(quantiles, list) and quantiles else None,
        "top_values": [list(t) for t in top[:TOP_VALUES_SHOWN]],
        "more_values": max(0, len(top) - TOP_VALUES_SHOWN),
    }


def serving_entry(serving_root: Path, model: str, version: int, newest: list[int]) -> dict:
    """Returns the model's `config { ... }` of models.config and whether its policy serves `version`.

    `newest` (the newest published versions) stands for the dirs TF Serving finds under a `latest`
    policy. A models.config that does not parse is reported in `problem`.
    """
    path = as_path(serving_root) / MODELS_CONFIG_FILE
    try:
        config = model_config(read_models_config(serving_root), model)
    except RegistryError as err:
        return {"path": str(path), "block": None, "served": False, "problem": str(err)}
    if config is None:
        return {"path": str(path), "block": None, "served": False}
    from google.protobuf import text_format

    return {
        "path": str(path),
        "block": "config {\n" + textwrap.indent(text_format.MessageToString(config), "  ") + "}",
        "served": policy_serves(config, version, newest),
        "labels": [key for key, value in sorted(config.version_labels.items()) if value == version],
    }


def policy_serves(config, version: int, newest: list[int]) -> bool:
    """Returns whether a ModelConfig's version policy loads `version` (TF Serving's default: latest 1)."""
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return True
    if choice == "specific":
        return version in policy.specific.versions
    num_latest = max(1, policy.latest.num_versions) if choice == "latest" else 1
    return version in newest[-num_latest:]


def _dict(value: object) -> dict:
    """Returns `value` if it is a dict, else an empty one (a field of an older or odd entry)."""
    return value if isinstance(value, dict) else {}


def _dict_or_none(value: object) -> dict | None:
    return value if isinstance(value, dict) else None


def _ref_fields(ref: ModelRef) -> dict:
    return {
        "model": ref.name,
        "pipeline": ref.pipeline,
        "dag_id": ref.dag_id,
        "model_dir": str(ref.model_dir),
        "promotion_approval": ref.promotion_approval,
    }
