"""Builds one Airflow DAG per pipeline config: train -> validate -> export -> wait -> publish.

Importing this module and building DAGs imports no TensorFlow and reads no data: the
scheduler's DAG processor runs it every 30 seconds.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Asset, Param

from include.config import PipelineConfig
from include.config.claims import model_asset_name, model_asset_uri
from include.run.options import MAX_LEARNING_RATE, MAX_REASON_LENGTH, MAX_STEPS
from include.versions import MAX_VERSION, model_dir, runs_dir
from plugins import savedmodel_storage  # noqa: F401 - Airflow reads the buckets' connections
from plugins.savedmodel_notifiers import failure_notifiers
from plugins.savedmodel_operators import SavedModelExportOperator
from plugins.savedmodel_sensors import SavedModelVersionSensor
from plugins.savedmodel_tasks import publish_version, train, validate_signatures


def model_asset(config: PipelineConfig) -> Asset:
    """Returns the Asset that gets an event each time the pipeline publishes a version."""
    return Asset(name=model_asset_name(config), uri=model_asset_uri(config))


def trigger_params(config: PipelineConfig) -> dict[str, Param]:
    """Returns the manual-trigger form: overrides validated by JSON schema before a run starts."""
    return {
        "steps": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=MAX_STEPS,
            title="Training steps",
            description=(
                f"Overrides training.steps ({config.training.steps})."
                if config.training.steps
                else f"Trains this many steps instead of training.epochs ({config.training.epochs})."
            )
            + " Empty = YAML value.",
        ),
        "learning_rate": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=MAX_LEARNING_RATE,
            title="Learning rate",
            description=f"Overrides training.learning_rate ({config.training.learning_rate}).",
        ),
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=MAX_VERSION,
            title="Version",
            description="Publish under this version number. Empty = the run's logical date "
            "as YYYYMMDDHHMMSS (UTC).",
        ),
        "force_publish": Param(
            False,
            type="boolean",
            title="Force publish",
            description="Replace different content already published under the same version. Needs a reason.",
        ),
        "allow_breaking_change": Param(
            False,
            type="boolean",
            title="Allow breaking signature change",
            description="Publish even if signatures differ incompatibly from the served version.",
        ),
        # Nullable, or the UI marks the field required and blocks every trigger without a reason.
        "force_reason": Param(
            None,
            type=["null", "string"],
            maxLength=MAX_REASON_LENGTH,
            title="Force reason",
            description="Why force_publish is needed (recorded in the manifest).",
        ),
    }


def build_pipeline_dag(config: PipelineConfig, doc_md: str | None = None) -> DAG:
    """Returns the DAG of one pipeline."""
    pipeline_file = str(config.source_path)
    ops = config.operations
    start = config.start_date
    docs = "\n\n".join(part for part in (doc_md, _pipeline_doc(config)) if part)
    with DAG(
        dag_id=config.dag_id,
        description=config.description or f"Train and publish the {config.model.name} SavedModel",
        doc_md=docs,
        schedule=config.schedule,
        start_date=pendulum.datetime(start.year, start.month, start.day, tz="UTC"),
        catchup=config.catchup,
        tags=list(config.tags),
        params=trigger_params(config),
        max_active_runs=ops.max_active_runs,
        default_args={
            "owner": config.owner,
            "retries": config.retries,
            "retry_delay": dt.timedelta(minutes=config.retry_delay_minutes),
            # Permanent errors (bad config, contract mismatch, ...) fail without retry; see
            # plugins/savedmodel_errors.py. Only transient ones are retried, with backoff.
            "retry_exponential_backoff": ops.retry_backoff_multiplier,
            "max_retry_delay": dt.timedelta(minutes=ops.max_retry_delay_minutes),
            "execution_timeout": dt.timedelta(minutes=ops.task_timeout_minutes),
            # After the last try only: run_failed, or gate_blocked with the report (none without
            # `notifications:` receivers; plugins/savedmodel_notifiers.py).
            "on_failure_callback": failure_notifiers(config),
        },
    ) as dag:
        # With CeleryExecutor, `training_queue` sends train tasks to their own workers (a big-memory
        # or GPU pool); the other tasks stay on [operators] default_queue. LocalExecutor ignores it.
        queue = {"queue": ops.training_queue} if ops.training_queue else {}
        trained = train.override(
            pool=ops.training_pool or "default_pool",
            **queue,
            execution_timeout=dt.timedelta(minutes=ops.train_timeout_minutes),
        )(pipeline_file, str(runs_dir(config.storage.export_root, config.model.name)))
        validated = validate_signatures(trained["record"])
        exported = SavedModelExportOperator(task_id="export_savedmodel", run_record=trained["record"])
        waited = SavedModelVersionSensor(
            task_id="wait_for_version",
            version_dir=trained["export_dir"],
            mode="poke" if ops.sensor_mode == "deferrable" else ops.sensor_mode,
            deferrable=ops.sensor_mode == "deferrable",
            poke_interval=10,
            timeout=dt.timedelta(minutes=ops.sensor_timeout_minutes).total_seconds(),
            conn_id=config.storage.connection,  # the triggerer reads no YAML to learn it
        )
        published = publish_version.override(outlets=[model_asset(config)])(trained["record"], waited.output)
        validated >> exported >> waited >> published
    return dag


def _pipeline_doc(config: PipelineConfig) -> str:
    """Returns the per-pipeline part of the DAG docs shown in the UI."""
    return (
        f"### Pipeline `{config.name}`\n"
        f"- config: `{config.source_path}`\n"
        f"- model `{config.model.name}` (builder `{config.model.builder}`), "
        f"signatures: {', '.join(f'`{k}`' for k in config.signatures)}\n"
        f"- data: `{config.data.location}`; served from "
        f"`{model_dir(config.storage.serving_root, config.model.name)}/<version>`\n"
    )
