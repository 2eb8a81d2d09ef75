"""SavedModelVersionSensor: done only for a complete version dir, in poke and reschedule modes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from plugins.savedmodel_sensors import SavedModelVersionSensor


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


def test_reschedule_mode_pokes_the_same(version_copy):
    """Reschedule mode uses the same completeness rule."""
    assert poke(version_copy, mode="reschedule").is_done


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
    ],
    ids=[
        "missing pb",
        "empty pb",
        "missing variables",
        "missing index",
        "missing shard",
        "shard 2 of 2 missing",
        "missing dir",
    ],
)
def test_incomplete_version_is_not_done(version_copy, damage):
    """Missing pb, variables/, index or any named data shard keeps the sensor waiting."""
    damage(version_copy)
    assert not poke(version_copy).is_done


def test_timeout_raises_sensor_timeout(tmp_path):
    """With timeout=0 a never-complete dir ends in AirflowSensorTimeout."""
    sensor = SavedModelVersionSensor(
        task_id="wait_for_version", version_dir=str(tmp_path / "1"), timeout=0, poke_interval=0
    )
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
