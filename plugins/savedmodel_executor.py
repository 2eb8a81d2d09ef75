"""LocalExecutor that pays TensorFlow's import once per scheduler, not once per task.

Importing TensorFlow takes about 6 s here, and train, validate_signatures and export_savedmodel
each run in a new task process: three imports per run, more than the work itself. This executor
imports TensorFlow in the scheduler before LocalExecutor forks its worker processes; the workers,
and the task processes they fork, inherit the loaded modules (copy-on-write), so a task's
`import tensorflow` is a dictionary lookup.

Forking after the import is safe because importing creates no session, device or op thread pool
(sessions and graphs are only ever made in task processes, after the fork); tests/test_executor.py
checks the workers have the library mapped, and every end-to-end run uses this executor. It
needs the `fork` start method (Linux's default); with `spawn` it behaves like LocalExecutor.

Select it with `[core] executor = plugins.savedmodel_executor.TensorFlowLocalExecutor`
(the Makefile and `tools/local_airflow.py` do).
"""

from __future__ import annotations

import time

from airflow.executors.local_executor import LocalExecutor


class TensorFlowLocalExecutor(LocalExecutor):
    """A LocalExecutor whose workers start with TensorFlow already imported."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            started = time.monotonic()
            import tensorflow  # noqa: F401 - inherited by every worker and task process

            self.log.info("TensorFlow imported for the workers in %.1fs", time.monotonic() - started)
        super().start()
