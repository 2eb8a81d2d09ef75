"""SavedModelVersionTrigger: waits in the triggerer until a version dir is a complete SavedModel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.savedmodel.files import missing_parts_at
from plugins import savedmodel_storage  # noqa: F401 - Airflow reads the buckets' connections


def export_problems(version_dir: str, conn_id: str | None = None) -> list[str]:
    """Returns what keeps `version_dir` (a path or a `gs://`/`s3://` prefix) from being a whole SavedModel.

    A prefix in a bucket is judged by its listing (include/savedmodel/files.py `missing_objects`),
    opened with the Airflow connection `conn_id` (None: the one this process bound to the bucket,
    else the provider's default credentials). The triggerer parses no pipeline YAML, so the trigger
    hands the connection on itself.
    """
    if conn_id is not None:
        from include.storage.connections import use_connection

        use_connection(version_dir, conn_id)
    return missing_parts_at(version_dir)


class SavedModelVersionTrigger(BaseTrigger):
    """Fires once, when `version_dir` holds saved_model.pb, the variables index and every shard.

    The check runs in a worker thread so a slow filesystem or object store never blocks the
    triggerer's loop. The deferral's timeout (set by the sensor) bounds the wait.

    :param version_dir: the SavedModel version directory (or bucket prefix) to watch.
    :param poke_interval: seconds between checks.
    :param conn_id: the Airflow connection of the bucket `version_dir` is in (None: default chain).
    """

    def __init__(self, version_dir: str, poke_interval: float = 10.0, conn_id: str | None = None) -> None:
        super().__init__()
        self.version_dir = version_dir
        self.poke_interval = poke_interval
        self.conn_id = conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Returns the importable classpath and the kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"version_dir": self.version_dir, "poke_interval": self.poke_interval, "conn_id": self.conn_id},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yields one event with the version dir once it is complete."""
        while True:
            problems = await asyncio.to_thread(export_problems, self.version_dir, self.conn_id)
            if not problems:
                self.log.info("SavedModel at %s is complete", self.version_dir)
                yield TriggerEvent({"status": "complete", "version_dir": self.version_dir})
                return
            self.log.info("SavedModel at %s not complete yet: %s", self.version_dir, "; ".join(problems))
            await asyncio.sleep(self.poke_interval)
