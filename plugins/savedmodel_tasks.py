"""The TaskFlow steps of a pipeline DAG: train, validate_signatures and publish_version.

Each step is a thin shell: read the run context, call `include/`, turn permanent errors into
AirflowFailException. TensorFlow is imported inside `include/` functions, at run time only.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from importlib import metadata

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from plugins.savedmodel_errors import fail_fast_on_permanent_errors

log = logging.getLogger(__name__)

#: Logged by the TensorFlow tasks: whether they inherited TensorFlow from their worker process
#: (TensorFlowLocalExecutor, include/celery_config.py) or pay the import themselves.
PRELOADED = "TensorFlow already loaded (inherited from the worker process)"
NOT_PRELOADED = "TensorFlow not loaded yet: this task process imports it"


def _log_tensorflow_preload() -> None:
    log.info(PRELOADED if "tensorflow" in sys.modules else NOT_PRELOADED)


@task(multiple_outputs=True)
def train(pipeline_file: str) -> dict:
    """Trains on the data as of the run's date; returns checkpoint, metrics, version and paths."""
    from include.config import load_pipeline_config
    from include.run_options import resolve_run_options
    from include.training import train_model
    from include.versions import export_dir, run_work_dir

    _log_tensorflow_preload()
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
def validate_signatures(pipeline_file: str, checkpoint: str, metrics: dict, options: dict) -> dict:
    """Checks signatures against the contract and the served version, smoke-runs them, gates quality."""
    from include.config import load_pipeline_config
    from include.registry import baseline, read_manifest
    from include.signatures import validate_checkpoint
    from include.versions import model_dir

    _log_tensorflow_preload()
    with fail_fast_on_permanent_errors():
        config = load_pipeline_config(pipeline_file)
        served = baseline(read_manifest(model_dir(config.storage.serving_root, config.model.name)))
        if served and int(served["version"]) > int(options["version"]):
            # A version older than the served one (a backfill) cannot displace it: it gets no
            # label and is not "latest", so only the absolute thresholds apply.
            log.info(
                "version %s is older than the baseline %s: no regression check",
                options["version"],
                served["version"],
            )
            served = None
        log.info("baseline: %s", f"version {served['version']}" if served else "none")
        verdict = validate_checkpoint(
            config,
            checkpoint,
            metrics,
            baseline=served,
            force_reason=options.get("force_reason") if options.get("force_publish") else None,
            allow_breaking_change=bool(options.get("allow_breaking_change")),
        )
    return verdict


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
    signatures: dict,
    verdict: str,
    baseline_version: int | None,
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
        "signatures": signatures,
        "quality_gate": {"verdict": verdict, "baseline_version": baseline_version},
        "code_revision": _code_revision(),
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
            keep_versions=config.serving.keep_versions,
            serving_policy={
                "version_policy": config.serving.version_policy,
                "num_latest": config.serving.num_latest,
            },
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
            "labels": result.labels,
            "metrics": metrics,
        }
    return result.to_dict()


def _code_revision() -> str | None:
    """Returns the git commit of the project checkout, if it is one (else None)."""
    from include.config import PROJECT_ROOT

    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    revision = done.stdout.strip() if done.returncode == 0 else ""
    return revision or None


def _package_version(name: str) -> str | None:
    """Returns an installed distribution's version without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@task
def move_label() -> dict:
    """Points a label (stable/canary) at a published, loadable version; records who and why."""
    from include.config import load_all_pipelines
    from include.registry import promote

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    with fail_fast_on_permanent_errors():
        configs, _ = load_all_pipelines()
        config = next((c for c in configs if c.name == params["pipeline"]), None)
        if config is None:
            raise AirflowFailException(f"pipeline {params['pipeline']!r} is not a valid pipeline")
        by = getattr(dag_run, "triggering_user_name", None) or dag_run.run_id
        manifest = promote(
            config.storage.serving_root,
            config.model.name,
            params["version"],
            params["label"],
            by=by,
            reason=params["reason"],
        )
    return {"model": config.model.name, "labels": manifest["labels"]}
