"""The pipeline's events as JSON: what failed, what a gate blocked, what waits for approval, what moved.

Every event has the same envelope, whatever the channel (email, webhook):

    {"event": "gate_blocked", "event_id": "<uuid>", "occurred_at": "2026-10-20T00:03:12+00:00",
     "pipeline": "digits_softmax", "model": "digits", "version": 20261020000000,
     "labels": {"stable": 20261012000000, "canary": 20261012000000},
     "run": {"dag_id": "digits_softmax", "run_id": "...", "task_id": "validate_signatures", "try_number": 1},
     "run_url": "http://airflow.example.com/dags/digits_softmax/runs/...",
     "details": {...}}

`details` depends on the event (see `EVENTS`). The id is derived from what happened (the event,
the run, the task and its try), so a receiver that sees it twice (a retried delivery, a callback
run twice) can drop the second.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable
from urllib.parse import quote

from include.errors import DataCheckError, QualityGateError
from include.summary import describe_check

#: The events, and what each one's `details` hold.
EVENTS: dict[str, str] = {
    "run_failed": "a task failed after its last try: task_id, try_number, error",
    "gate_blocked": "the data checks or the quality gate blocked the run: gate, error, failed (in words), "
    "report (the failing rows)",
    "approval_waiting": "a label move waits for a person: label, requested_by, reason, current, "
    "approve_url (Airflow's Required actions), version_url, timeout_at",
    "label_moved": "labels now point at the version: moved ([{label, previous}]), by, reason",
}
#: Failing rows of a blocked run's report an event carries; the whole report is in the registry.
MAX_REPORT_ROWS = 50
#: Longest error message an event carries (the task log has the rest).
MAX_ERROR_CHARS = 2000
_NAMESPACE = uuid.UUID("6f1c3c1e-6a35-4f7e-9a8e-6d1f0c2b9a41")


def event_id(kind: str, *identity: object) -> str:
    """Returns the id of an event: a UUID derived from its kind and what identifies it (run, task, try)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join([kind, *(str(part) for part in identity)])))


def build_event(
    kind: str,
    *,
    identity: Iterable[object],
    pipeline: str,
    model: str,
    version: int | None,
    labels: dict,
    run: dict,
    run_url: str | None,
    details: dict,
    occurred_at: dt.datetime | None = None,
) -> dict:
    """Returns an event: the envelope every channel sends, `details` as the event defines them."""
    if kind not in EVENTS:
        raise ValueError(f"event: expected one of {list(EVENTS)}, got {kind!r}")
    when = occurred_at or dt.datetime.now(dt.UTC)
    return _plain(
        {
            "event": kind,
            "event_id": event_id(kind, *identity),
            "occurred_at": when.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "pipeline": pipeline,
            "model": model,
            "version": version,
            "labels": {k: v for k, v in sorted(labels.items()) if v is not None},
            "run": run,
            "run_url": run_url,
            "details": details,
        }
    )


def encode(event: dict) -> bytes:
    """Returns the event as the JSON bytes a webhook sends (and signs): compact, keys sorted, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """Returns the Airflow UI's page of a DAG run under `base_url` (the API server's [api] base_url)."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def first_line(error: BaseException | str | None) -> str:
    """Returns an error's first line, bounded (an event is a notice, the task log has the rest)."""
    text = str(error or "").strip().splitlines()
    line = text[0] if text else (type(error).__name__ if isinstance(error, BaseException) else "")
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def blocked_details(error: BaseException | None) -> dict | None:
    """Returns the gate_blocked details of a failure, None when no gate blocked it.

    Looks through the exception's causes: the task raises AirflowFailException from the
    DataCheckError or QualityGateError that carries the report.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DataCheckError):
            return _blocked("data_checks", error, error.report.get("rows") or [])
        if isinstance(error, QualityGateError):
            return _blocked("quality_gate", error, error.report)
        error = error.__cause__ or error.__context__
    return None


def _blocked(gate: str, error: BaseException, rows: list[dict]) -> dict:
    failing = [row for row in rows if row.get("verdict") == "fail"]
    return {
        "gate": gate,
        "error": first_line(error),
        "failed": [describe_check(row) for row in failing[:MAX_REPORT_ROWS]] or [first_line(error)],
        "failing_rows": len(failing),
        "report": failing[:MAX_REPORT_ROWS],
    }


def _plain(value: object) -> object:
    """Returns `value` with what JSON cannot hold made plain: non-finite floats as strings, others str()."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
