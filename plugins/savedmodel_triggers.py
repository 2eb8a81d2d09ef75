"""SavedModelVersionTrigger: waits in the triggerer until a version dir is a complete SavedModel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.savedmodel.files import missing_parts


class SavedModelVersionTrigger(BaseTrigger):
    """Fires once, when `version_dir` holds saved_model.pb, the variables index and every shard.

    The check runs in a worker thread so a slow filesystem never blocks the triggerer's loop.
    The deferral's timeout (set by the sensor) bounds the wait.

    :param version_dir: the SavedModel version directory to watch.
    :param poke_interval: seconds between checks.
    """

    def __init__(self, version_dir: str, poke_interval: float = 10.0) -> None:
        super().__init__()
        self.version_dir = version_dir
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Returns the importable classpath and the kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"version_dir": self.version_dir, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yields one event with the version dir once it is complete."""
        while True:
            problems = await asyncio.to_thread(missing_parts, self.version_dir)
            if not problems:
                self.log.info("SavedModel at %s is complete", self.version_dir)
                yield TriggerEvent({"status": "complete", "version_dir": self.version_dir})
                return
            self.log.info("SavedModel at %s not complete yet: %s", self.version_dir, "; ".join(problems))
            await asyncio.sleep(self.poke_interval)
