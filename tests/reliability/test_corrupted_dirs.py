"""Corrupted exports: publish refuses them by name and the promote check names the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from include.errors import IncompleteModelError, RegistryError
from include.registry.policy import check_loadable
from include.registry.publish import publish_version


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated saved_model.pb": (lambda d: _truncate(d / "saved_model.pb"), "saved_model.pb is truncated"),
    "truncated index": (
        lambda d: _truncate(d / "variables" / "variables.index"),
        "variables.index is truncated",
    ),
    "truncated shard": (
        lambda d: _truncate(d / "variables" / "variables.data-00000-of-00001"),
        "variables.data-00000-of-00001 is truncated",
    ),
    "empty variables/": (
        lambda d: [p.unlink() for p in (d / "variables").iterdir()],
        "variables.index is missing",
    ),
}


@pytest.fixture
def damaged(exported, tmp_path, request) -> tuple[Path, str]:
    damage, message = CORRUPTIONS[request.param]
    target = tmp_path / "export" / "5"
    shutil.copytree(exported, target)
    damage(target)
    return target, message


@pytest.mark.parametrize("damaged", list(CORRUPTIONS), indirect=True)
def test_publish_refuses_and_names_the_problem(damaged, tmp_path):
    """Publishing a corrupted export raises IncompleteModelError naming the file; nothing appears."""
    export, message = damaged
    with pytest.raises(IncompleteModelError, match=message.replace(".", r"\.")):
        publish_version(export, tmp_path / "serving", "digits", 5)
    assert not (tmp_path / "serving" / "digits" / "5").exists()


@pytest.mark.parametrize("damaged", list(CORRUPTIONS), indirect=True)
def test_load_check_names_the_problem(damaged):
    """The promote/rollback load check refuses a corrupted version with the same message."""
    export, message = damaged
    with pytest.raises(RegistryError, match=message.replace(".", r"\.")):
        check_loadable(export)
