"""The record of every notification delivery attempt, beside the model it is about.

    <serving_root>/<model>/.notifications/deliveries.jsonl     one JSON object a line, a line a try
    <serving_root>/<model>/.notifications/deliveries.1.jsonl   the one before, once that passed 1 MB

Local disk or bucket, like the registry (include/durable.py): each line is appended under the
lock of `.notifications/` itself (never the model dir's, which publishers hold), so recording never
waits for a publish. TF Serving ignores the dir (its name is not a number). Lines hold no secret:
the target is the webhook URL without its query, or the email recipients.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from include.durable import append_bytes, locked, write_text_atomic
from include.storage.paths import as_path

log = logging.getLogger(__name__)

NOTIFICATIONS_DIR = ".notifications"
DELIVERIES_FILE = "deliveries.jsonl"
PREVIOUS_FILE = "deliveries.1.jsonl"
#: Size past which the file is moved to PREVIOUS_FILE and a new one started: in a bucket an append
#: rewrites the object, so it must stay small; on disk it keeps the record from growing for ever.
ROTATE_BYTES = 1_000_000


def record_attempt(model_dir: str | os.PathLike[str], attempt: dict) -> Path:
    """Appends one delivery attempt to the model's deliveries file; returns the file's path."""
    directory = as_path(model_dir) / NOTIFICATIONS_DIR
    path = directory / DELIVERIES_FILE
    line = (json.dumps(attempt, sort_keys=True, default=str) + "\n").encode("utf-8")
    with locked(directory):
        if append_bytes(path, line) > ROTATE_BYTES:
            write_text_atomic(directory / PREVIOUS_FILE, path.read_bytes())
            write_text_atomic(path, b"")
    return path


def read_deliveries(model_dir: str | os.PathLike[str], limit: int | None = None) -> list[dict]:
    """Returns the recorded attempts of a model, oldest first (the last `limit` if given).

    A line that does not read as a JSON object (a writer that crashed mid-line) is skipped.
    """
    directory = as_path(model_dir) / NOTIFICATIONS_DIR
    attempts = []
    for name in (PREVIOUS_FILE, DELIVERIES_FILE):
        try:
            data = (directory / name).read_bytes()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                log.warning("skipping an unreadable line of %s", directory / name)
                continue
            if isinstance(value, dict):
                attempts.append(value)
    return attempts[-limit:] if limit else attempts
