"""Version numbers and the paths derived from them: the one place that holds the version rule.

A version is the run's logical date in UTC written as the integer YYYYMMDDHHMMSS: readable,
ordered, and the same on every rerun of a date. TensorFlow Serving loads only directories whose
name is a positive int64, so every other name under a model dir is invisible to it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

from include.errors import RunParamsError
from include.storage.location import BucketURI, join

MAX_VERSION = 2**63 - 1
_RUN_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def version_from_date(when: dt.datetime) -> int:
    """Returns the version number of a run dated `when` (UTC YYYYMMDDHHMMSS)."""
    if when.tzinfo is None:
        raise ValueError(f"version dates must be timezone-aware, got {when!r}")
    return int(when.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S"))


def parse_version(value: object) -> int:
    """Returns `value` as a version number; raises RunParamsError unless it is an int in 1..2**63-1."""
    if isinstance(value, bool):
        raise RunParamsError(f"version: expected a positive integer, got {value!r}")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int):
        raise RunParamsError(f"version: expected a positive integer, got {value!r}")
    if not 1 <= value <= MAX_VERSION:
        raise RunParamsError(f"version: expected 1 <= version <= {MAX_VERSION}, got {value}")
    return value


def resolve_version(
    logical_date: dt.datetime | None, run_after: dt.datetime | None, explicit: object = None
) -> int:
    """Returns the version of a run: the explicit param, else its logical date, else run-after."""
    if explicit is not None:
        return parse_version(explicit)
    when = logical_date or run_after
    if when is None:
        raise RunParamsError("a run needs a logical date, a run-after time or an explicit version")
    return version_from_date(when)


def is_version_name(name: str) -> bool:
    """Returns whether TensorFlow Serving would load a directory of this name as a version."""
    return name.isascii() and name.isdigit() and 1 <= int(name) <= MAX_VERSION and name == str(int(name))


def run_key(run_id: str) -> str:
    """Returns a directory-safe, collision-free name for an Airflow run id."""
    readable = _RUN_KEY_UNSAFE.sub("_", run_id).strip("._")[:80] or "run"
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def model_dir(serving_root: str | Path, model_name: str) -> Path | BucketURI:
    """Returns the directory TensorFlow Serving's `base_path` points at for a model."""
    return join(serving_root, model_name)


def version_dir(serving_root: str | Path, model_name: str, version: int) -> Path | BucketURI:
    """Returns the published directory of one version of a model."""
    return model_dir(serving_root, model_name) / str(parse_version(version))


def runs_dir(export_root: str | Path, model_name: str) -> Path | BucketURI:
    """Returns the directory holding the work dirs of a model's runs."""
    return join(export_root, model_name, "runs")


def run_work_dir(export_root: str | Path, model_name: str, run_id: str) -> Path | BucketURI:
    """Returns the run-scoped scratch directory (checkpoint, metrics, export) of one run."""
    return runs_dir(export_root, model_name) / run_key(run_id)


def export_dir(work_dir: str | Path, version: int) -> Path | BucketURI:
    """Returns where a run (its work dir) exports its SavedModel before publishing."""
    return join(work_dir, "export", str(parse_version(version)))
