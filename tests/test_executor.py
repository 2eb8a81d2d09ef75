"""TensorFlowLocalExecutor: its worker processes start with TensorFlow's library already loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from airflow.executors.local_executor import LocalExecutor
from plugins.savedmodel_executor import TensorFlowLocalExecutor

executor = {"plain": LocalExecutor, "tensorflow": TensorFlowLocalExecutor}[sys.argv[1]](parallelism=2)
executor.start()
maps = {pid: open(f"/proc/{pid}/maps").read() for pid in executor.workers}
executor.end()
print(json.dumps({
    "workers": len(maps),
    "with_tensorflow": sum("_pywrap_tensorflow_internal" in m for m in maps.values()),
    "in_parent": "tensorflow" in sys.modules,
}))
"""


def worker_report(kind: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("tensorflow", {"workers": 2, "with_tensorflow": 2, "in_parent": True}),
        ("plain", {"workers": 2, "with_tensorflow": 0, "in_parent": False}),  # the check can fail
    ],
)
def test_workers_inherit_tensorflow(kind, expected):
    """Every forked worker process has TensorFlow's native library mapped before any task runs."""
    assert worker_report(kind) == expected
