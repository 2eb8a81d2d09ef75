"""SavedModelVersionSensor and its trigger: done only for a complete version dir, in every mode."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import shutil
from pathlib import Path

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    TaskDeferred,
)

from plugins.savedmodel_sensors import SavedModelVersionSensor
from plugins.savedmodel_triggers import SavedModelVersionTrigger


@pytest.fixture
def version_copy(exported, tmp_path) -> Path:
    """Returns a private copy of the session's export, free to damage."""
    target = tmp_path / "20261101000000"
    shutil.copytree(exported, target)
    return target


def poke(path: Path, **kwargs):
    return SavedModelVersionSensor(task_id="wait_for_version", version_dir=str(path), **kwargs).poke({})


def test_complete_version_is_done_and_returns_its_path(version_copy):
    """A complete SavedModel makes the sensor done, with the version path as XCom."""
    result = poke(version_copy)
    assert result.is_done and result.xcom_value == str(version_copy)


class FirstTry:
    """A task instance on its first try: never rescheduled before."""

    def get_first_reschedule_date(self, context) -> None:
        return None


def test_reschedule_mode_frees_the_slot_until_the_version_is_complete(version_copy):
    """Reschedule mode: an incomplete dir asks to run again a poke interval later; a complete one returns."""
    sensor = SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=str(version_copy), mode="reschedule", poke_interval=30
    )
    pb = version_copy / "saved_model.pb"
    pb.rename(version_copy / "hidden.pb")
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(AirflowRescheduleException) as info:
        sensor.execute({"ti": FirstTry()})
    assert info.value.reschedule_date >= before + dt.timedelta(seconds=30)
    (version_copy / "hidden.pb").rename(pb)
    assert sensor.execute({"ti": FirstTry()}) == str(version_copy)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: _remove(d / "saved_model.pb"),
        lambda d: (d / "saved_model.pb").write_bytes(b""),
        lambda d: _remove(d / "variables"),
        lambda d: _remove(d / "variables" / "variables.index"),
        lambda d: [_remove(p) for p in (d / "variables").glob("variables.data-*")],
        lambda d: (d / "variables" / "variables.data-00000-of-00001").rename(
            d / "variables" / "variables.data-00000-of-00002"
        ),
        lambda d: _remove(d),
        lambda d: _truncate(d / "saved_model.pb", 0.5),
        lambda d: _truncate(d / "variables" / "variables.index", 0.9),
        lambda d: (d / "variables" / "variables.index").write_bytes(b"\x00" * 164),
        lambda d: _truncate(d / "variables" / "variables.data-00000-of-00001", 0.5),
        lambda d: _remove(d) or d.write_bytes(b"stray file named like a version"),
    ],
    ids=[
        "missing pb",
        "empty pb",
        "missing variables",
        "missing index",
        "missing shard",
        "shard 2 of 2 missing",
        "missing dir",
        "truncated pb",
        "truncated index",
        "garbage index",
        "truncated shard",
        "stray file",
    ],
)
def test_incomplete_version_is_not_done(version_copy, damage):
    """Missing, empty, truncated or garbage pb, index or data shard keeps the sensor waiting."""
    damage(version_copy)
    assert not poke(version_copy).is_done


def test_timeout_raises_sensor_timeout(tmp_path):
    """With timeout=0 a never-complete dir ends in AirflowSensorTimeout."""
    sensor = SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=str(tmp_path / "1"), timeout=0, poke_interval=0
    )
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})


# --- deferrable mode: the sensor hands waiting to SavedModelVersionTrigger ------------------


def deferrable_sensor(path: Path) -> SavedModelVersionSensor:
    return SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=str(path), deferrable=True, poke_interval=0.05, timeout=60
    )


def test_deferrable_sensor_defers_to_the_trigger_when_incomplete(version_copy):
    """An incomplete dir raises TaskDeferred carrying the trigger and the resume method."""
    (version_copy / "saved_model.pb").unlink()
    with pytest.raises(TaskDeferred) as info:
        deferrable_sensor(version_copy).execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, SavedModelVersionTrigger)
    assert trigger.version_dir == str(version_copy)
    assert info.value.method_name == "execute_complete"


def test_deferrable_sensor_returns_at_once_when_complete(version_copy):
    """A dir complete at the first check needs no deferral."""
    assert deferrable_sensor(version_copy).execute({}) == str(version_copy)


def test_execute_complete_checks_the_dir_again(version_copy):
    """Resuming re-checks completeness, so a dir damaged after the event is not accepted."""
    sensor = deferrable_sensor(version_copy)
    event = {"status": "complete", "version_dir": str(version_copy)}
    assert sensor.execute_complete({}, event) == str(version_copy)
    (version_copy / "variables" / "variables.index").unlink()
    with pytest.raises(AirflowException, match=r"variables\.index is missing"):
        sensor.execute_complete({}, event)


def test_trigger_serializes_to_an_importable_classpath(tmp_path):
    """The triggerer rebuilds the trigger from serialize(): classpath import + kwargs."""
    classpath, kwargs = SavedModelVersionTrigger(str(tmp_path), poke_interval=3).serialize()
    module_name, _, class_name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert isinstance(rebuilt, SavedModelVersionTrigger)
    assert (rebuilt.version_dir, rebuilt.poke_interval) == (str(tmp_path), 3)


def test_trigger_fires_only_once_the_version_is_complete(version_copy):
    """run() keeps polling while a shard is missing and yields one event once it is back."""
    shard = next((version_copy / "variables").glob("variables.data-*"))
    hidden = shard.with_name("hidden")
    shard.rename(hidden)

    async def scenario():
        events = SavedModelVersionTrigger(str(version_copy), poke_interval=0.02).run()
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.3)
        assert not first.done()
        hidden.rename(shard)
        return await asyncio.wait_for(first, timeout=10)

    event = asyncio.run(scenario())
    assert event.payload == {"status": "complete", "version_dir": str(version_copy)}
