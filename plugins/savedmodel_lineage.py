"""OpenLineage from the pipeline's tasks: the data partitions in, the checkpoint, export and version out.

The OpenLineage provider's listener asks a finished task's operator for
`get_openlineage_facets_on_complete` (its DefaultExtractor). `LineageMixin` gives operators that
method; `lineage_task` is `@task` with an operator that has it (a TaskFlow task is otherwise a
plain `_PythonDecoratedOperator`, for which the provider reports no datasets). A task hands over
what it read and wrote with `keep()` while it holds the facts, as OpenLineage datasets built by
include/lineage: the listener reads nothing again. Describing them never fails a task: an error
there is logged and the task is reported without datasets.

Without an OpenLineage transport (`[openlineage] transport`, or the provider's other settings) the
provider is disabled: it registers no listener, `enabled()` is False, the tasks keep nothing and
import nothing of OpenLineage.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator

log = logging.getLogger(__name__)


def enabled() -> bool:
    """Returns whether the OpenLineage provider will report this task (a transport is configured)."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:  # the provider is not installed
        return False
    return not is_disabled()


def keep(context: Context, step: str, *args) -> None:
    """Hands what this task read and wrote to its operator for the listener, when OpenLineage is on.

    `include.lineage.STEPS[step](*args)` describes them; an error there is logged, never raised.
    """
    if not enabled():
        return
    task = context.get("task")
    if not isinstance(task, LineageMixin):
        return
    try:
        from include.lineage import STEPS

        inputs, outputs = STEPS[step](*args)
    except Exception:  # lineage is a report: the step's work is done and stays done
        log.warning("OpenLineage: could not describe what %s read and wrote", task.task_id, exc_info=True)
        return
    task.kept_lineage = (list(inputs), list(outputs))


class LineageMixin:
    """An operator that reports the datasets its run kept (`keep`) when OpenLineage asks on completion."""

    kept_lineage: tuple[list, list] | None = None

    def get_openlineage_facets_on_complete(self, task_instance) -> OperatorLineage | None:
        """Returns the inputs and outputs this task kept; None when it kept none."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        if self.kept_lineage is None:
            return None
        inputs, outputs = self.kept_lineage
        return OperatorLineage(inputs=inputs, outputs=outputs)


class LineageTaskOperator(LineageMixin, _PythonDecoratedOperator):
    """The `@task` operator, reporting to OpenLineage what its function kept."""


def lineage_task(
    python_callable: Callable | None = None, multiple_outputs: bool | None = None, **kwargs
) -> TaskDecorator:
    """Returns `@task` (same arguments) for a function that reports its datasets with `keep`."""
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=LineageTaskOperator,
        **kwargs,
    )
