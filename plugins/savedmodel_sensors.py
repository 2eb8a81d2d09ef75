"""SavedModelVersionSensor: waits until a version dir holds a complete SavedModel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from include.summary import summary_line
from plugins.savedmodel_triggers import SavedModelVersionTrigger, export_problems

if TYPE_CHECKING:
    from airflow.sdk import Context


class SavedModelVersionSensor(BaseSensorOperator):
    """Done when `version_dir` holds `saved_model.pb` and `variables/` with its index and shards.

    Every data shard `variables.data-K-of-N` for K < N must be present; an empty
    `saved_model.pb` or index does not count. Pushes the version dir's path as its XCom.
    Works in poke and reschedule modes; with `deferrable=True` the waiting happens in the
    triggerer (SavedModelVersionTrigger) and frees the worker slot. A version dir in a bucket
    (`gs://...`, `s3://...`) is judged by its object listing: the same objects present and
    non-empty, nothing read.

    :param version_dir: the SavedModel version directory (or bucket prefix) to watch. (templated)
    :param deferrable: hand the waiting to the triggerer when the dir is not complete yet.
    :param conn_id: the Airflow connection of the bucket `version_dir` is in (None: default chain).
    """

    template_fields: Sequence[str] = ("version_dir",)
    ui_color = "#81c784"

    def __init__(
        self, *, version_dir: str, deferrable: bool = False, conn_id: str | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.version_dir = version_dir
        self.deferrable = deferrable
        self.conn_id = conn_id

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        self.defer(
            trigger=SavedModelVersionTrigger(
                version_dir=str(self.version_dir), poke_interval=self.poke_interval, conn_id=self.conn_id
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resumes after the trigger fired: checks the dir once more and returns its path."""
        problems = export_problems(str(self.version_dir), self.conn_id)
        if not event or event.get("status") != "complete" or problems:
            raise AirflowException(f"SavedModel at {self.version_dir} is not complete: {problems or event}")
        self.log.info("SavedModel at %s is complete (resumed from the triggerer)", self.version_dir)
        self.log.info(
            summary_line(self.task_id, f"{self.version_dir} is complete (saved_model.pb, variables/)")
        )
        return str(self.version_dir)

    def poke(self, context: Context) -> PokeReturnValue:
        problems = export_problems(str(self.version_dir), self.conn_id)
        if problems:
            self.log.info("SavedModel at %s not complete yet: %s", self.version_dir, "; ".join(problems))
            return PokeReturnValue(is_done=False)
        self.log.info("SavedModel at %s is complete", self.version_dir)
        self.log.info(
            summary_line(self.task_id, f"{self.version_dir} is complete (saved_model.pb, variables/)")
        )
        return PokeReturnValue(is_done=True, xcom_value=str(self.version_dir))
