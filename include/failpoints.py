"""Failpoints: named places where a test can hold a task, so that a fault lands where it chooses.

A fault test (a worker killed mid-upload, a host cut off from the bucket mid-upload, a scheduler
killed mid-train) must inject its fault at a known point of the task, not race the clock or wait
for a log line. With `SAVEDMODEL_FAILPOINTS` set to a dir, a task that reaches point `name` while
the file `<dir>/<name>.armed` exists renames it to `<name>.reached` (one task takes it: the rename
is atomic; a retry passes through), writes its pid into it, and waits until `<name>.release`
appears or `SAVEDMODEL_FAILPOINT_TIMEOUT` seconds (default 600) pass. Unset, a point costs one
environment lookup.

Points: `train.loop` (after the first logged training step), `publish.upload` (in a publish to a
bucket, after the first object of the version was uploaded and verified, before saved_model.pb).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "SAVEDMODEL_FAILPOINTS"
POINTS = ("train.loop", "publish.upload")


def failpoint(name: str) -> None:
    """Holds the task at point `name` if a test armed it (see the module's docstring)."""
    root = os.environ.get(ENV)
    if not root:
        return
    armed, reached = Path(root) / f"{name}.armed", Path(root) / f"{name}.reached"
    try:
        armed.rename(reached)
    except FileNotFoundError:
        return
    reached.write_text(f"{os.getpid()}\n")
    log.warning("failpoint %s reached: holding until %s.release appears", name, name)
    deadline = time.monotonic() + float(os.environ.get("SAVEDMODEL_FAILPOINT_TIMEOUT", "600"))
    release = Path(root) / f"{name}.release"
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
