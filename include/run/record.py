"""The run record: everything one run needs, resolved once by its first task, read by the others.

`start_run` snapshots the pipeline YAML byte for byte into the run's work dir (with its SHA-256),
resolves the run's options and version, and writes `run.json` beside it. Every later task calls
`load_run` and gets the config from the snapshot, never from the YAML file, so a file edited
while a run is in flight only affects the next run. Each step writes what it found into the same
dir (`write_step`), and XCom carries the record's path and small facts only.

    <export_root>/<model>/runs/<run key>/
        run.json            this record
        config.yaml         the pipeline YAML as the run read it
        checkpoint/         train: checkpoint, metrics, held-out sample
        train.json          train: checkpoint path, metrics, data lineage, hyperparameters
        validation.json     validate_signatures: signatures, fingerprint, gate verdict
        reference_outputs.json  validate_signatures: every signature's outputs on the held-out rows
        export/<version>/   export_savedmodel: the SavedModel (export.json: its digest and size)
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from include.config import PipelineConfig, load_pipeline_config, parse_pipeline_yaml
from include.durable import write_json_atomic, write_text_atomic
from include.errors import ConfigError, RunRecordError
from include.run.options import RunOptions, resolve_run_options
from include.versions import export_dir, run_key

log = logging.getLogger(__name__)

RECORD_FILE = "run.json"
CONFIG_SNAPSHOT = "config.yaml"
#: The task that writes the record (run.json), and each step file's writer: what must run first.
RECORD_WRITER = "train"
STEP_WRITERS = {
    "train": "train",
    "validation": "validate_signatures",
    "reference_outputs": "validate_signatures",
    "export": "export_savedmodel",
}


@dataclass(frozen=True)
class RunIdentity:
    """Who the run is to Airflow: shown in lineage, never used to find files."""

    dag_id: str
    run_id: str
    run_type: str
    logical_date: str | None  # ISO 8601; None for a manual run without one


@dataclass(frozen=True)
class RunRecord:
    """One run, resolved: its identity, config snapshot and digest, options, version and dirs."""

    run: RunIdentity
    pipeline: str
    config_source: str  # the YAML the run started from (may have changed since)
    config_sha256: str  # of the snapshot's bytes
    options: RunOptions
    work_dir: str

    @property
    def version(self) -> int:
        """Returns the version this run publishes."""
        return self.options.version

    @property
    def path(self) -> Path:
        """Returns where this record is stored (what XCom hands on)."""
        return Path(self.work_dir) / RECORD_FILE

    @property
    def config_snapshot(self) -> Path:
        """Returns the run's copy of the pipeline YAML."""
        return Path(self.work_dir) / CONFIG_SNAPSHOT

    @functools.cached_property
    def config(self) -> PipelineConfig:
        """Returns the pipeline config of this run, parsed from its snapshot."""
        return load_pipeline_config(self.config_snapshot)

    @property
    def export_dir(self) -> Path:
        """Returns where export_savedmodel writes the SavedModel (the sensor watches it)."""
        return export_dir(self.work_dir, self.version)

    def write_step(self, step: str, result: dict) -> Path:
        """Writes what a step found into `<work_dir>/<step>.json` atomically; returns the path."""
        path = Path(self.work_dir) / f"{step}.json"
        write_json_atomic(path, result)
        return path

    def read_step(self, step: str) -> dict:
        """Returns what an earlier step of this run wrote; raises RunRecordError if it did not."""
        path = Path(self.work_dir) / f"{step}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            writer = STEP_WRITERS.get(step, step)
            raise RunRecordError(
                f"run {self.run.run_id} has no {path.name} in {self.work_dir}: task {writer!r} of this run "
                f"writes it and must run (and succeed) before this task"
            ) from None
        except (OSError, ValueError) as err:
            raise RunRecordError(
                f"step {step!r} of run {self.run.run_id} left no readable {path}: {err}"
            ) from None

    def to_dict(self) -> dict:
        """Returns the record as JSON-able data (what run.json holds)."""
        data = asdict(self)
        data["options"] = self.options.to_dict()
        return data


def start_run(
    pipeline_file: str | os.PathLike[str],
    runs_dir: str | os.PathLike[str],
    run: RunIdentity,
    params: dict,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
) -> RunRecord:
    """Returns the record of a run in `runs_dir`, writing it (and the config snapshot) on the first call.

    A retry of the first task finds the record of its earlier attempt and returns it unchanged,
    before reading the YAML: the run keeps the config it started with, even if the file was edited
    or broken since. `runs_dir` comes from the DAG the run belongs to (`versions.runs_dir`).
    Raises ConfigError or RunParamsError.
    """
    work_dir = Path(runs_dir) / run_key(run.run_id)
    existing = work_dir / RECORD_FILE
    if existing.is_file():
        record = load_run(existing)
        log.info(
            "run record %s exists (an earlier attempt): keeping its config %s",
            existing,
            record.config_sha256[:12],
        )
        return record
    source = Path(pipeline_file)
    try:
        data = source.read_bytes()
    except OSError as err:
        raise ConfigError(str(source), [f"cannot read file: {err}"]) from None
    config = parse_pipeline_yaml(data, source=source.resolve())
    options = resolve_run_options(params, logical_date, run_after)
    work_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(
        run=run,
        pipeline=config.name,
        config_source=str(source.resolve()),
        config_sha256=hashlib.sha256(data).hexdigest(),
        options=options,
        work_dir=str(work_dir),
    )
    # The snapshot goes first: a record on disk always has its config beside it.
    write_text_atomic(record.config_snapshot, data)
    write_json_atomic(record.path, record.to_dict())
    log.info(
        "run %s: version %s, data as of %s, config %s (sha256 %s), record %s",
        run.run_id,
        record.version,
        options.as_of,
        source,
        record.config_sha256[:12],
        record.path,
    )
    return record


def load_run(path: str | os.PathLike[str] | None) -> RunRecord:
    """Returns the run record stored at `path`; RunRecordError if it is missing, unreadable or tampered.

    `path` is what the train task handed on through XCom: None (or "None" from a template) when
    this task runs without it, as `airflow tasks test <dag> validate_signatures` alone does. The
    config snapshot must still hash to the recorded SHA-256: a run never mixes two configs.
    """
    if path is None or str(path) in ("", "None"):
        raise RunRecordError(
            f"no run record was handed to this task: task {RECORD_WRITER!r} of the same run writes it "
            f"({RECORD_FILE}) and hands its path on, so {RECORD_WRITER!r} must run (and succeed) first; "
            "`airflow dags test <dag> <date>` runs every task in order"
        )
    path = Path(path)
    if not path.exists():
        raise RunRecordError(
            f"cannot read the run record {path}: it does not exist; task {RECORD_WRITER!r} of the run "
            f"writes it and must run (and succeed) first"
        )
    try:
        data = json.loads(path.read_text())
        options = dict(data["options"])
        options["as_of"] = dt.date.fromisoformat(options["as_of"])
        record = RunRecord(
            run=RunIdentity(**data["run"]),
            pipeline=data["pipeline"],
            config_source=data["config_source"],
            config_sha256=data["config_sha256"],
            options=RunOptions(**options),
            work_dir=data["work_dir"],
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunRecordError(f"cannot read the run record {path}: {err}") from None
    try:
        snapshot = record.config_snapshot.read_bytes()
    except OSError as err:
        raise RunRecordError(f"run record {path}: config snapshot unreadable: {err}") from None
    if hashlib.sha256(snapshot).hexdigest() != record.config_sha256:
        raise RunRecordError(
            f"run record {path}: config snapshot {record.config_snapshot} was changed after the run started "
            f"(sha256 {hashlib.sha256(snapshot).hexdigest()[:12]}, recorded {record.config_sha256[:12]})"
        )
    return record
