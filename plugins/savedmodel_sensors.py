"""SavedModelVersionSensor: waits until a version dir holds a complete SavedModel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseSensorOperator, PokeReturnValue

if TYPE_CHECKING:
    from airflow.sdk import Context


class SavedModelVersionSensor(BaseSensorOperator):
    """Done when `version_dir` holds `saved_model.pb` and `variables/` with its index and shards.

    Every data shard `variables.data-K-of-N` for K < N must be present; an empty
    `saved_model.pb` or index does not count. Pushes the version dir's path as its XCom.

    :param version_dir: the SavedModel version directory to watch. (templated)
    """

    template_fields: Sequence[str] = ("version_dir",)
    ui_color = "#81c784"

    def __init__(self, *, version_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.version_dir = version_dir

    def poke(self, context: Context) -> PokeReturnValue:
        from include.savedmodel_dir import missing_parts

        problems = missing_parts(self.version_dir)
        if problems:
            self.log.info("SavedModel at %s not complete yet: %s", self.version_dir, "; ".join(problems))
            return PokeReturnValue(is_done=False)
        self.log.info("SavedModel at %s is complete", self.version_dir)
        return PokeReturnValue(is_done=True, xcom_value=str(self.version_dir))
