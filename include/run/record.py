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

The work dir may be a bucket (`storage.export_root: gs://...`): run.json then keeps the bucket
URI as `work_dir`, each task works in a local copy of it (`local_dir`, include/run/workdir.py),
and XCom carries the bucket URIs of run.json and of the export dir. Paths a step file records
(train.json's checkpoint, export.json's export dir) are written in the work dir's terms (the
bucket URI) and mapped onto the reading task's copy with `RunRecord.local`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from include.config import PipelineConfig, load_pipeline_config, parse_pipeline_yaml
from include.durable import write_json_atomic, write_text_atomic
from include.errors import ConfigError, RunRecordError
from include.run import workdir
from include.run.options import RunOptions, resolve_run_options
from include.storage.location import BucketURI, is_bucket, join, location
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
    work_dir: str  # a local path or a bucket URI: the run's home
    #: This task's local copy of a bucket work dir (None: the work dir is local and is its own copy).
    local_dir: str | None = field(default=None, compare=False, repr=False)

    @property
    def version(self) -> int:
        """Returns the version this run publishes."""
        return self.options.version

    @property
    def remote(self) -> BucketURI | None:
        """Returns the work dir when it is in a bucket, else None."""
        return BucketURI(self.work_dir) if is_bucket(self.work_dir) else None

    @property
    def home(self) -> Path:
        """Returns the dir this task reads and writes the run's files in (the local copy for a bucket)."""
        return Path(self.local_dir or self.work_dir)

    @property
    def path(self) -> Path | BucketURI:
        """Returns where this record is stored (what XCom hands on): a path or a bucket URI."""
        return join(self.work_dir, RECORD_FILE)

    @property
    def config_snapshot(self) -> Path:
        """Returns the run's copy of the pipeline YAML (in this task's local copy)."""
        return self.home / CONFIG_SNAPSHOT

    @functools.cached_property
    def config(self) -> PipelineConfig:
        """Returns the pipeline config of this run, parsed from its snapshot."""
        return load_pipeline_config(self.config_snapshot)

    @property
    def export_dir(self) -> Path | BucketURI:
        """Returns where export_savedmodel's SavedModel ends up (the sensor watches it): path or URI."""
        return export_dir(self.work_dir, self.version)

    @property
    def local_export_dir(self) -> Path:
        """Returns where this task's copy of the export dir is."""
        return export_dir(self.home, self.version)

    def local(self, recorded: str | os.PathLike[str]) -> Path:
        """Returns this task's copy of a path a step file recorded in the work dir's terms."""
        remote = self.remote
        if remote is not None and is_bucket(recorded):
            try:
                return self.home / BucketURI(str(recorded)).relative_to(remote)
            except ValueError:
                raise RunRecordError(
                    f"run {self.run.run_id} recorded {recorded}, which is not in its work dir {remote}"
                ) from None
        return Path(recorded)

    def recorded(self, local: str | os.PathLike[str]) -> str:
        """Returns a path in this task's copy in the work dir's terms (what step files record)."""
        remote = self.remote
        if remote is None:
            return str(local)
        return str(remote / Path(local).relative_to(self.home).as_posix())

    def write_step(self, step: str, result: dict) -> Path:
        """Writes what a step found into `<step>.json` of this task's copy atomically; returns the path.

        For a bucket work dir the step's push (include/run/workdir.py) uploads it, last.
        """
        path = self.home / f"{step}.json"
        write_json_atomic(path, result)
        return path

    def read_step(self, step: str) -> dict:
        """Returns what an earlier step of this run wrote; raises RunRecordError if it did not.

        For a bucket work dir the step file must have been pulled into this task's copy.
        """
        path = self.home / f"{step}.json"
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
        data.pop("local_dir")  # this task's, not the run's
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
    or broken since. `runs_dir` comes from the DAG the run belongs to (`versions.runs_dir`): a
    path, or a bucket URI, where the record is written in this task's local copy and uploaded
    (config.yaml first, then run.json, only if no attempt wrote one meanwhile).
    Raises ConfigError or RunParamsError.
    """
    work_dir = location(runs_dir) / run_key(run.run_id)
    remote = work_dir if isinstance(work_dir, BucketURI) else None
    existing = work_dir / RECORD_FILE
    if _record_exists(existing):
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
    local_dir = workdir.fresh_mirror(remote) if remote else None
    if remote is None:
        work_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(
        run=run,
        pipeline=config.name,
        config_source=str(source.resolve()),
        config_sha256=hashlib.sha256(data).hexdigest(),
        options=options,
        work_dir=str(work_dir),
        local_dir=str(local_dir) if local_dir else None,
    )
    # The snapshot goes first: a record on disk always has its config beside it.
    write_text_atomic(record.config_snapshot, data)
    write_json_atomic(record.home / RECORD_FILE, record.to_dict())
    if remote is not None and not _upload_record(record):
        log.warning("another attempt of run %s wrote its record first: keeping that one", run.run_id)
        return load_run(existing)
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


def _record_exists(path: Path | BucketURI) -> bool:
    """Returns whether a run record is stored at `path` (a file, or an object in a bucket)."""
    if isinstance(path, BucketURI):
        from include.storage import objects

        return objects.stat(path) is not None
    return path.is_file()


def _upload_record(record: RunRecord) -> bool:
    """Uploads a new record's snapshot, then its run.json unless one is there; returns whether it was not."""
    from include.storage import objects

    remote = record.remote
    objects.upload_file(record.config_snapshot, remote / CONFIG_SNAPSHOT)
    try:
        objects.write(remote / RECORD_FILE, (record.home / RECORD_FILE).read_bytes(), if_absent=True)
    except objects.PreconditionFailed:
        return False
    return True


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
    path = location(path)
    local_dir = _fetch_record(path) if isinstance(path, BucketURI) else None
    stored = local_dir / RECORD_FILE if local_dir else path
    if not stored.exists():
        raise RunRecordError(
            f"cannot read the run record {path}: it does not exist; task {RECORD_WRITER!r} of the run "
            f"writes it and must run (and succeed) first"
        )
    try:
        data = json.loads(stored.read_text())
        options = dict(data["options"])
        options["as_of"] = dt.date.fromisoformat(options["as_of"])
        record = RunRecord(
            run=RunIdentity(**data["run"]),
            pipeline=data["pipeline"],
            config_source=data["config_source"],
            config_sha256=data["config_sha256"],
            options=RunOptions(**options),
            work_dir=data["work_dir"],
            local_dir=str(local_dir) if local_dir else None,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunRecordError(f"cannot read the run record {path}: {err}") from None
    if local_dir is not None and record.path != path:
        raise RunRecordError(f"run record {path} names another work dir: {record.work_dir}")
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


def _fetch_record(uri: BucketURI) -> Path:
    """Returns a fresh local copy of the work dir of the record at `uri`, holding run.json and config.yaml.

    What the bucket lacks is missing from the copy too (load_run says which).
    """
    from include.storage import objects

    local_dir = workdir.fresh_mirror(uri.parent)
    for name in (RECORD_FILE, CONFIG_SNAPSHOT):
        data = objects.read_bytes(uri.parent / name)
        if data is not None:
            (local_dir / name).write_bytes(data)
    return local_dir
