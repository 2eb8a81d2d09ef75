"""The TaskFlow steps of a pipeline DAG: train, validate_signatures and publish_version.

Each step is a thin shell around `include/run/steps.py`: `train` writes the run record from the
pipeline YAML and the run context; every later step gets the record's path and reads the rest
from it. Permanent errors become AirflowFailException. TensorFlow is imported inside `include/`
functions, at run time only. With a work dir in a bucket, XCom carries bucket URIs, and each task
removes its local copy of the work dir when it ends (include/run/workdir.py). With OpenLineage on,
each step keeps what it read and wrote for the provider's listener (plugins/savedmodel_lineage.py).
"""

from __future__ import annotations

import logging
import sys

from airflow.sdk import get_current_context

from include.errors import DataCheckError, QualityGateError
from include.summary import checks_headline, data_read, describe_check, metrics_headline, summary_line
from plugins.savedmodel_errors import fail_fast_on_permanent_errors
from plugins.savedmodel_lineage import keep, lineage_task

log = logging.getLogger(__name__)

#: Logged by the TensorFlow tasks: whether they inherited TensorFlow from their worker process
#: (TensorFlowLocalExecutor, tools/celery_config.py) or pay the import themselves.
PRELOADED = "TensorFlow already loaded (inherited from the worker process)"
NOT_PRELOADED = "TensorFlow not loaded yet: this task process imports it"


def _log_tensorflow_preload() -> None:
    log.info(PRELOADED if "tensorflow" in sys.modules else NOT_PRELOADED)


@lineage_task(multiple_outputs=True)
def train(pipeline_file: str, runs_dir: str) -> dict:
    """Resolves the run record, trains on the data as of the run's date; returns the record's path."""
    from include.run import workdir
    from include.run.preflight import check_writable_dir
    from include.run.record import RunIdentity, start_run
    from include.run.steps import train_run

    _log_tensorflow_preload()
    context = get_current_context()
    dag_run = context["dag_run"]
    logical_date = context.get("logical_date")
    run = RunIdentity(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        logical_date=logical_date.isoformat() if logical_date else None,
    )
    record = None
    with fail_fast_on_permanent_errors():
        # The record goes under storage.export_root: a file or read-only mount there is named here
        # (permanent, no retry); train_run's preflight checks the rest before training.
        check_writable_dir(runs_dir, "the runs dir under storage.export_root")
        try:
            record = start_run(
                pipeline_file, runs_dir, run, dict(context["params"]), logical_date, dag_run.run_after
            )
            result = train_run(record)
            keep(context, "train", record, result)  # before a bucket work dir's copy is discarded
        except DataCheckError as err:
            log.error(summary_line("train", f"blocked by the data checks: {'; '.join(err.failed)}"))
            raise
        finally:
            workdir.discard(record)
    data, metrics = result["data"], result["metrics"]
    log.info(
        summary_line(
            "train",
            f"{len(data['partitions'])} partitions, {data_read(data)}, {data['train_examples']} "
            f"train / {data['eval_examples']} held-out examples, "
            f"{checks_headline(result.get('data_checks'))}, "
            f"{metrics_headline(metrics)}",
        )
    )
    return {"record": str(record.path), "version": record.version, "export_dir": str(record.export_dir)}


@lineage_task(multiple_outputs=True)
def validate_signatures(record: str) -> dict:
    """Checks signatures against the contract and the served version, runs them, gates quality."""
    from include.run import workdir
    from include.run.record import load_run
    from include.run.steps import validate_run

    _log_tensorflow_preload()
    with fail_fast_on_permanent_errors():
        run = load_run(record)
        try:
            verdict = validate_run(run)
            keep(get_current_context(), "validate_signatures", run)
        except QualityGateError as err:
            failed = [describe_check(row) for row in err.report if row["verdict"] == "fail"] or [str(err)]
            log.error(
                summary_line("validate_signatures", f"blocked by the quality gate: {'; '.join(failed)}")
            )
            raise
        finally:
            workdir.discard(run)
    log.info(
        summary_line(
            "validate_signatures",
            f"{len(verdict['signatures'])} signatures match the contract "
            f"({', '.join(verdict['signatures'])}), quality gate {verdict['verdict']} "
            f"({len(verdict.get('checks', []))} checks)",
        )
    )
    return {"verdict": verdict["verdict"], "signature_fingerprint": verdict["signature_fingerprint"]}


@lineage_task
def publish_version(record: str, version_dir: str) -> dict:
    """Verifies the exported SavedModel, then promotes it into the serving root with its lineage."""
    from include.run import workdir
    from include.run.record import load_run
    from include.run.steps import publish_run
    from plugins.savedmodel_notifiers import current_labels, has_receivers, notify_label_moved

    _log_tensorflow_preload()
    context = get_current_context()
    with fail_fast_on_permanent_errors():
        run = load_run(record)
        before = current_labels(run.config) if has_receivers(run.config) else {}  # label_moved's "previous"
        try:
            verification, result = publish_run(run, version_dir)
            metrics = run.read_step("train")["metrics"]
        finally:
            workdir.discard(run)
    log.info(
        summary_line(
            "publish_version",
            f"export loaded and checked ({verification.signatures} signatures on {verification.rows} "
            f"held-out rows, {verification.warmup_records} warmup requests); version {result.version} "
            f"{result.status}, labels: {', '.join(result.labels) or 'none'}",
        )
    )
    keep(context, "publish_version", version_dir, result.to_dict(), metrics)
    moved = [{"label": label, "previous": before.get(label)} for label in result.labels]
    notify_label_moved(
        context, run.config, result.version, moved, by="publish", reason="automatic on publish"
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
