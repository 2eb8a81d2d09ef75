"""The TaskFlow steps of a pipeline DAG: train, validate_signatures and publish_version.

Each step is a thin shell: read the run context, call `include/`, turn permanent errors into
AirflowFailException. TensorFlow is imported inside `include/` functions, at run time only.
"""

from __future__ import annotations

import logging
import socket
from importlib import metadata

from airflow.sdk import get_current_context, task

from plugins.savedmodel_errors import fail_fast_on_permanent_errors

log = logging.getLogger(__name__)


@task(multiple_outputs=True)
def train(pipeline_file: str) -> dict:
    """Trains on the data as of the run's date; returns checkpoint, metrics, version and paths."""
    from include.config import load_pipeline_config
    from include.run_options import resolve_run_options
    from include.training import train_model
    from include.versions import export_dir, run_work_dir

    context = get_current_context()
    dag_run = context["dag_run"]
    with fail_fast_on_permanent_errors():
        config = load_pipeline_config(pipeline_file)
        options = resolve_run_options(dict(context["params"]), context.get("logical_date"), dag_run.run_after)
        log.info(
            "run %s: version %s, data as of %s, options %s",
            dag_run.run_id,
            options.version,
            options.as_of,
            options.to_dict(),
        )
        work_dir = run_work_dir(config.storage.export_root, config.model.name, dag_run.run_id)
        result = train_model(
            config, options.as_of, work_dir, steps=options.steps, learning_rate=options.learning_rate
        )
    version_path = export_dir(config.storage.export_root, config.model.name, dag_run.run_id, options.version)
    return {
        **result.to_dict(),
        "version": options.version,
        "options": options.to_dict(),
        "export_base": str(version_path.parent),
        "export_dir": str(version_path),
    }


@task(multiple_outputs=True)
def validate_signatures(pipeline_file: str, checkpoint: str, metrics: dict) -> dict:
    """Checks signatures against the contract, smoke-runs them and applies the quality gate."""
    from include.config import load_pipeline_config
    from include.signatures import validate_checkpoint

    with fail_fast_on_permanent_errors():
        config = load_pipeline_config(pipeline_file)
        verdict = validate_checkpoint(config, checkpoint, metrics)
    return {
        "signature_fingerprint": verdict["signature_fingerprint"],
        "verdict": verdict["verdict"],
        "signatures": verdict["signatures"],
    }


@task
def publish_version(
    pipeline_file: str,
    version_path: str,
    version: int,
    options: dict,
    metrics: dict,
    data: dict,
    hyperparameters: dict,
    signature_fingerprint: str,
) -> dict:
    """Promotes the exported version into the serving root atomically and records its lineage."""
    from include.config import load_pipeline_config
    from include.publish import publish_version as publish

    context = get_current_context()
    dag_run = context["dag_run"]
    logical_date = context.get("logical_date")
    record = {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        "logical_date": logical_date.isoformat() if logical_date else None,
        "params": options,
        "data": data,
        "metrics": metrics,
        "hyperparameters": hyperparameters,
        "signature_fingerprint": signature_fingerprint,
        "tensorflow_version": _package_version("tensorflow-cpu") or _package_version("tensorflow"),
        "airflow_version": _package_version("apache-airflow"),
        "published_by": socket.gethostname(),
    }
    with fail_fast_on_permanent_errors():
        config = load_pipeline_config(pipeline_file)
        result = publish(
            version_path,
            config.storage.serving_root,
            config.model.name,
            version,
            force=options.get("force_publish", False),
            force_reason=options.get("force_reason") or None,
            record=record,
        )
    log.info(
        "version %s of model %s is served from %s (%s)",
        result.version,
        config.model.name,
        result.path,
        result.status,
    )
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = {
            "version": result.version,
            "path": result.path,
            "status": result.status,
            "eval_accuracy": metrics.get("eval_accuracy"),
        }
    return result.to_dict()


def _package_version(name: str) -> str | None:
    """Returns an installed distribution's version without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
