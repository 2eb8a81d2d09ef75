"""The data of the Models pages: every model, one model's versions, one version's lineage.

Plain dicts, the same for the HTML pages and their JSON endpoints (plugins/savedmodel_registry_app.py).
The registry is read through include/registry/store.py (the head, one entry) and the in-memory index of
include/registry/page/index.py (every version of a model); `models.config` is read as TF Serving reads it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from include.registry.page.index import model_index
from include.registry.serving_config import MODELS_CONFIG_FILE
from include.registry.store import LABELS, MANIFEST_FILE, read_entry, read_head, read_manifest
from include.versions import is_version_name, model_dir

#: Versions per page of a model's table, and the most a page may ask for.
PER_PAGE = 50
MAX_PER_PAGE = 500
#: History events shown on a model's page (the JSON endpoint gives the same).
HISTORY_SHOWN = 100
#: The metrics the chart draws, in this order, when versions carry them.
CHART_METRICS = ("eval_accuracy", "eval_loss")


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
            serving_root=Path(c.storage.serving_root),
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
    head = read_head(ref.model_dir) if (ref.model_dir / MANIFEST_FILE).is_file() else {}
    newest = head.get("newest") or []
    last = newest[-1] if newest else None
    entry = read_version_entry(ref.model_dir, last) if last is not None else None
    metrics = (entry or {}).get("metrics") or {}
    return {
        **_ref_fields(ref),
        "labels": {label: (head.get("labels") or {}).get(label) for label in LABELS},
        "newest_version": last,
        "newest_published_at": (entry or {}).get("published_at"),
        "newest_accuracy": metrics.get("eval_accuracy"),
        "newest_loss": metrics.get("eval_loss"),
        "versions_on_disk": versions_on_disk(ref.model_dir),
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
        "serving": index.head.get("serving", {}),
        "total": len(versions),
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "versions": rows,
        "history": index.history()[:HISTORY_SHOWN],
        "series": chart_series(versions),
    }


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
    labels = [label for label in LABELS if (head.get("labels") or {}).get(label) == version]
    return {
        **_ref_fields(ref),
        "version": version,
        "entry": entry,
        "labels": labels,
        "current": {label: (head.get("labels") or {}).get(label) for label in LABELS},
        "serving": serving_entry(ref.serving_root, ref.name, version, head.get("newest") or []),
    }


def serving_entry(serving_root: Path, model: str, version: int, newest: list[int]) -> dict:
    """Returns the model's `config { ... }` block of models.config and whether it serves `version`."""
    try:
        text = (Path(serving_root) / MODELS_CONFIG_FILE).read_text()
    except FileNotFoundError:
        return {"path": str(Path(serving_root) / MODELS_CONFIG_FILE), "block": None, "served": False}
    block = config_block(text, model)
    return {
        "path": str(Path(serving_root) / MODELS_CONFIG_FILE),
        "block": block,
        "served": block is not None and _policy_serves(block, version, newest),
        "labels": [
            key
            for key, value in re.findall(
                r'version_labels\s*\{\s*key:\s*"([^"]+)"\s*value:\s*(\d+)', block or ""
            )
            if int(value) == version
        ],
    }


def config_block(text: str, model: str) -> str | None:
    """Returns the `config { ... }` block of models.config whose name is `model` (None if absent)."""
    for block in _config_blocks(text):
        if re.search(rf'^\s*name:\s*"{re.escape(model)}"\s*$', block, re.MULTILINE):
            return block
    return None


def versions_on_disk(directory: Path) -> int:
    """Returns how many version dirs (numeric names, as TF Serving sees them) a model dir holds."""
    try:
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if is_version_name(e.name) and e.is_dir())
    except FileNotFoundError:
        return 0


def _ref_fields(ref: ModelRef) -> dict:
    return {
        "model": ref.name,
        "pipeline": ref.pipeline,
        "dag_id": ref.dag_id,
        "model_dir": str(ref.model_dir),
        "promotion_approval": ref.promotion_approval,
    }


def read_version_entry(directory: Path, version: int) -> dict | None:
    """Returns a version's entry; a single-file manifest of before is read whole for it."""
    entry = read_entry(directory, version)
    if entry is None and (directory / MANIFEST_FILE).is_file():
        entry = read_manifest(directory)["versions"].get(str(version))
    return entry


def _config_blocks(text: str) -> list[str]:
    """Returns the top-level `config { ... }` blocks of a ModelServerConfig text proto."""
    blocks, depth, start = [], 0, None
    for match in re.finditer(r"config\s*\{|\{|\}", text):
        token = match.group()
        if token.startswith("config") and depth == 1:
            start = match.start()
        if token.endswith("{"):
            depth += 1
        else:
            depth -= 1
            if depth == 1 and start is not None:
                blocks.append(text[start : match.end()])
                start = None
    return blocks


def _policy_serves(block: str, version: int, newest: list[int]) -> bool:
    """Returns whether a config block's version policy loads `version`."""
    if re.search(r"\ball\s*\{\s*\}", block):
        return True
    latest = re.search(r"latest\s*\{\s*num_versions:\s*(\d+)", block)
    if latest:
        return version in newest[-int(latest.group(1)) :]
    return version in {int(v) for v in re.findall(r"\bversions:\s*(\d+)", block)}
