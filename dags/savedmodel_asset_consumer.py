"""
## Example consumer of new SavedModel versions (Airflow DAG scheduled on Assets)

Every pipeline's `publish_version` task emits an event on the Asset `savedmodel/<model>` with
the version, its path, its labels and metrics in the event's extra. This DAG runs whenever any
of them gets an event; it reports the new versions. Replace the task with what should happen
next (load tests, a canary rollout, a notification).
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import DAG, AssetAny, get_current_context, task

from include.config import load_all_pipelines
from plugins.savedmodel_dag_factory import model_asset

log = logging.getLogger(__name__)


@task
def report_new_versions() -> list[dict]:
    """Returns (and logs) the versions announced by the asset events that triggered this run."""
    events = get_current_context()["triggering_asset_events"]
    seen = []
    for asset, asset_events in events.items():
        for event in asset_events:
            extra = dict(event.extra or {})
            log.info(
                "new version of %s: %s at %s",
                getattr(asset, "name", asset),
                extra.get("version"),
                extra.get("path"),
            )
            seen.append({"asset": getattr(asset, "name", str(asset)), **extra})
    return seen


_assets = [model_asset(config) for config in load_all_pipelines()[0]]
if _assets:
    with DAG(
        dag_id="savedmodel_asset_consumer",
        description="Runs when any pipeline publishes a model version",
        doc_md=__doc__,
        schedule=AssetAny(*_assets),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["savedmodel", "example"],
        default_args={"owner": "ml-platform", "retries": 1},
    ):
        report_new_versions()
