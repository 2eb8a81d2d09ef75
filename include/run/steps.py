"""The steps of one run on its run record: train, validate, export, publish.

Plain Python without Airflow: the DAG's tasks are thin shells that call these with the record's
path and hand on what they return (small facts). Each step reads what the earlier ones wrote into
the run's work dir and writes its own result there (see include/run/record.py).

When the work dir is in a bucket, each step first pulls what it reads into the task's local copy
and ends by pushing what it wrote, its step JSON last (include/run/workdir.py): no step reads a
file another task left on a local disk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from include.config import PROJECT_ROOT
from include.errors import DataCheckError, PipelineError, QualityGateError
from include.registry import store
from include.registry.policy import baseline
from include.registry.publish import PublishResult, publish_version
from include.registry.store import read_manifest
from include.run import workdir
from include.run.preflight import preflight
from include.run.record import RunRecord
from include.savedmodel.export import export_savedmodel, source_file
from include.savedmodel.verify import Verification, verify_export
from include.storage.location import BucketURI, is_bucket
from include.train.data import read_sample
from include.train.training import CHECKPOINT_DIR, EVAL_SAMPLE_FILE, STATISTICS_FILE, train_model
from include.validate.checkpoint import validate_checkpoint
from include.validate.data_checks import check_data
from include.versions import model_dir

log = logging.getLogger(__name__)


def train_run(record: RunRecord) -> dict:
    """Returns the train step's result (checkpoint, metrics, data lineage, hyperparameters, data checks).

    The window's statistics are checked against the expectations and the baseline before any
    training step (include/validate/data_checks.py); a blocked run's report is recorded in the
    registry (`store.record_blocked`) before DataCheckError fails the task.
    """
    config = record.config
    preflight(config)  # before minutes of training: could this run publish at all?
    options = record.options
    served = _baseline_of(record)
    base = model_dir(config.storage.serving_root, config.model.name)
    served_statistics = store.read_statistics(base, served) if served else None
    log.info(
        "data checks against %s",
        f"version {served['version']}"
        if served_statistics
        else "declared expectations only (no baseline statistics)",
    )
    force_reason = options.force_reason if options.force_publish else None

    def checked(statistics: dict) -> dict:
        try:
            return check_data(
                config,
                statistics,
                {"version": served["version"], "statistics": served_statistics}
                if served_statistics
                else None,
                force_reason=force_reason,
            )
        except DataCheckError as err:
            record_blocked(
                record, "train", str(err).splitlines()[0], err.report["rows"], err.report["baseline_version"]
            )
            raise

    result = train_model(
        config,
        options.as_of,
        record.home,
        steps=options.steps,
        learning_rate=options.learning_rate,
        baseline_statistics=served_statistics,
        check_data=checked,
    ).to_dict()
    result["checkpoint"] = record.recorded(result["checkpoint"])
    record.write_step("train", result)
    workdir.push(record, [f"{CHECKPOINT_DIR}/"], marker="train.json")
    return result


def _pull_trained(record: RunRecord) -> dict:
    """Returns train.json, with the checkpoint dir pulled into the task's copy (bucket work dirs)."""
    workdir.pull(record, "train.json")
    trained = record.read_step("train")  # RunRecordError naming train if it never committed
    workdir.pull(record, f"{CHECKPOINT_DIR}/")
    return trained


def _baseline_of(record: RunRecord) -> dict | None:
    """Returns the entry of the version a run is compared with: `stable`, else the newest; None if none.

    A version older than it (a backfill) cannot displace it, so none: only the absolute
    thresholds and declared expectations apply to a backfill.
    """
    config = record.config
    served = baseline(read_manifest(model_dir(config.storage.serving_root, config.model.name)))
    if served and int(served["version"]) > record.version:
        log.info(
            "version %s is older than the baseline %s: no regression check", record.version, served["version"]
        )
        return None
    return served


def record_blocked(record: RunRecord, step: str, error: str, rows: list[dict], baseline_version) -> None:
    """Records a blocked run's report in the registry (the Models page shows it); never fails the task."""
    config = record.config
    report = {
        "run_id": record.run.run_id,
        "dag_id": record.run.dag_id,
        "logical_date": record.run.logical_date,
        "version": record.version,
        "step": step,
        "baseline_version": baseline_version,
        "error": error,
        "report": rows,
    }
    try:
        store.record_blocked(model_dir(config.storage.serving_root, config.model.name), report)
    except (OSError, PipelineError) as err:  # the task fails with the checks' error either way
        log.warning("could not record the blocked run's report in the registry: %s", err)


def validate_run(record: RunRecord) -> dict:
    """Returns the verdict on the trained checkpoint: contract, compatibility, smoke run, quality gate.

    The baseline is the version served now (`stable`, else the newest); a version older than it
    (a backfill) cannot displace it, so only the absolute thresholds apply to it. A failed gate's
    report (every metric and slice check) is recorded in the registry as a blocked run's.
    """
    config, options = record.config, record.options
    trained = _pull_trained(record)
    served = _baseline_of(record)
    log.info("baseline: %s", f"version {served['version']}" if served else "none")
    try:
        verdict = validate_checkpoint(
            config,
            str(record.local(trained["checkpoint"])),
            trained["metrics"],
            baseline=served,
            force_reason=options.force_reason if options.force_publish else None,
            allow_breaking_change=options.allow_breaking_change,
            slices=trained.get("slices") or {},
        )
    except QualityGateError as err:
        record_blocked(
            record, "validate_signatures", str(err), err.report, served.get("version") if served else None
        )
        raise
    record.write_step("reference_outputs", verdict.pop("reference_outputs"))
    record.write_step("validation", verdict)
    workdir.push(record, ["reference_outputs.json"], marker="validation.json")
    return verdict


def export_run(record: RunRecord) -> dict:
    """Returns the export step's result: the SavedModel written with SavedModelBuilder.

    For a bucket work dir: exported in the task's copy from the pulled checkpoint, then pushed,
    `saved_model.pb` after the rest of the dir, the checkpoint note, and export.json last.
    """
    trained = _pull_trained(record)
    local_dir = record.local_export_dir
    result = export_savedmodel(record.config, str(record.local(trained["checkpoint"])), local_dir)
    result["export_dir"] = record.recorded(result["export_dir"])
    # Which process wrote it: publish loads it in another one (except under `airflow dags test`).
    result["pid"] = os.getpid()
    record.write_step("export", result)
    names = [local_dir.relative_to(record.home).as_posix() + "/"]
    names.append(source_file(local_dir).relative_to(record.home).as_posix())
    workdir.push(record, names, marker="export.json")
    return result


def publish_run(record: RunRecord, export_path: str | os.PathLike[str]) -> tuple[Verification, PublishResult]:
    """Returns what verifying the exported SavedModel found and what publishing it with its lineage did.

    Nothing is published unless the export loads from disk and answers like the trained model
    (ExportVerificationError otherwise). An `export_path` in a bucket (the work dir's export dir,
    as the sensor hands it on) is pulled into the task's copy first, with the step files read.
    """
    config, options = record.config, record.options
    workdir.pull(record, "train.json", "validation.json", "reference_outputs.json")
    trained = record.read_step("train")
    validation = record.read_step("validation")
    checkpoint_dir = record.local(trained["checkpoint"]).parent
    if record.remote is not None:
        for name in (EVAL_SAMPLE_FILE, STATISTICS_FILE):
            workdir.pull(record, (checkpoint_dir / name).relative_to(record.home).as_posix())
    if is_bucket(export_path):
        export_path = _pull_export(record, BucketURI(str(export_path)))
    sample = read_sample(checkpoint_dir / EVAL_SAMPLE_FILE)
    verification = verify_export(export_path, config, sample, record.read_step("reference_outputs"))
    base = model_dir(config.storage.serving_root, config.model.name)
    statistics = checkpoint_dir / STATISTICS_FILE
    lineage = {
        **lineage_of(record),
        "data": trained["data"],
        "metrics": trained["metrics"],
        "hyperparameters": trained["hyperparameters"],
        "signature_fingerprint": validation["signature_fingerprint"],
        "signatures": validation["signatures"],
        "quality_gate": {
            "verdict": validation["verdict"],
            "baseline_version": validation["baseline_version"],
            "checks": validation.get("checks", []),
        },
        "data_checks": trained.get("data_checks"),
        "slices": trained.get("slices") or {},
        "statistics": (
            store.archive_statistics(base, json.loads(statistics.read_text()))
            if statistics.is_file()
            else None
        ),
        "verification": verification.to_dict(),
        "config": {
            "sha256": record.config_sha256,
            "snapshot": str(archive_config(record, base)),
            "source": record.config_source,
        },
    }
    published = publish_version(
        export_path,
        config.storage.serving_root,
        config.model.name,
        record.version,
        force=options.force_publish,
        force_reason=options.force_reason or None,
        record=lineage,
        keep_versions=config.serving.keep_versions,
        serving_policy={
            "version_policy": config.serving.version_policy,
            "num_latest": config.serving.num_latest,
        },
        expected_digest=verification.content_digest,
    )
    return verification, published


def _pull_export(record: RunRecord, uri: BucketURI) -> Path:
    """Returns the task's local copy of an export dir in the run's bucket work dir, pulled whole."""
    local = record.local(uri)
    workdir.pull(record, local.relative_to(record.home).as_posix() + "/")
    return local


def archive_config(record: RunRecord, base: Path) -> Path:
    """Returns where the run's config snapshot is kept beside the model: content-addressed, written once.

    Written by the registry's store under the model dir's lock, like every other file there.
    """
    return store.archive_config(base, record.config_sha256, record.config_snapshot.read_bytes())


def lineage_of(record: RunRecord) -> dict:
    """Returns who and what made a version: the run, its params, and the code and library versions."""
    return {
        "dag_id": record.run.dag_id,
        "run_id": record.run.run_id,
        "run_type": record.run.run_type,
        "logical_date": record.run.logical_date,
        "params": record.options.to_dict(),
        "code_revision": code_revision(),
        "tensorflow_version": package_version("tensorflow-cpu") or package_version("tensorflow"),
        "airflow_version": package_version("apache-airflow"),
        "published_by": socket.gethostname(),
    }


def code_revision() -> str | None:
    """Returns the git commit of the project checkout, if it is one (else None)."""
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


def package_version(name: str) -> str | None:
    """Returns an installed distribution's version without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
