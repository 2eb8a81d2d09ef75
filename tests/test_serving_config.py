"""TF Serving's models.config: valid ModelServerConfig, labelled versions kept loaded, every model."""

from __future__ import annotations

import json
import shutil

import pytest
from tensorflow_serving.config import model_server_config_pb2

from include.errors import RegistryError
from include.registry.publish import publish_version
from include.registry.serving_config import (
    MODELS_CONFIG_FILE,
    model_config,
    read_models_config,
    render_models_config,
    write_models_config,
)
from include.registry.store import MANIFEST_FILE, migrate_manifest, read_manifest
from tests.helpers import parse_models_config, publish_digits


def test_models_config_is_a_valid_model_server_config(exported, serving_root):
    """models.config parses as ModelServerConfig: base path, policy with labelled versions, labels."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert config.name == "digits" and config.model_platform == "tensorflow"
    assert config.base_path == str((serving_root / "digits").resolve())
    # latest 2 (20, 30) plus stable=10: TF Serving only labels loaded versions.
    assert list(config.model_version_policy.specific.versions) == [10, 20, 30]
    assert dict(config.version_labels) == {"stable": 10, "canary": 30}


def test_models_config_lists_every_model_under_the_root(exported, serving_root):
    """Two models under one serving root both appear in the one models.config."""
    publish_digits(exported, serving_root, 10)
    publish_version(exported, serving_root, "letters", 1, serving_policy={"version_policy": "all"})
    configs = parse_models_config(serving_root).model_config_list.config
    assert [c.name for c in configs] == ["digits", "letters"]
    assert configs[1].model_version_policy.HasField("all")


def test_retention_inside_the_newest_versions_keeps_models_config_right(exported, serving_root):
    """keep_versions=1 deletes 20, one of the newest two: models.config serves 10 (stable) and 30."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version, keep_versions=1)
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert list(config.model_version_policy.specific.versions) == [10, 30]
    assert dict(config.version_labels) == {"stable": 10, "canary": 30}


def test_a_single_file_manifest_renders_the_same_before_and_after_migration(exported, serving_root):
    """models.config from a manifest of before, not migrated yet, is the one rendered after migrating it."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    model_dir = serving_root / "digits"
    expected = render_models_config(serving_root)
    (model_dir / MANIFEST_FILE).write_text(json.dumps(read_manifest(model_dir)))  # the old single file
    assert render_models_config(serving_root) == expected
    migrate_manifest(model_dir)
    assert render_models_config(serving_root) == expected


def test_models_config_is_read_back_through_tf_servings_proto(exported, serving_root, tmp_path):
    """read_models_config returns a ModelServerConfig; model_config picks one model's block by name."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    config = read_models_config(serving_root)
    assert isinstance(config, model_server_config_pb2.ModelServerConfig)
    digits = model_config(config, "digits")
    assert digits.base_path == str((serving_root / "digits").resolve())
    assert dict(digits.version_labels) == {"stable": 10, "canary": 30}
    assert model_config(config, "letters") is None
    assert read_models_config(tmp_path / "no_root") is None and model_config(None, "digits") is None


def test_a_models_config_that_is_no_model_server_config_is_refused_naming_the_file(serving_root):
    """A hand-edited models.config with an unknown field raises RegistryError naming file and field."""
    serving_root.mkdir(parents=True, exist_ok=True)
    (serving_root / MODELS_CONFIG_FILE).write_text('model_config_list { config { nme: "digits" } }\n')
    with pytest.raises(RegistryError, match=r"models\.config is not a valid ModelServerConfig.*nme"):
        read_models_config(serving_root)


def test_write_models_config_refuses_a_model_dir_and_writes_nothing(exported, serving_root):
    """Given a model dir (or a version dir) for a serving root, nothing is written, not even a lock file."""
    publish_digits(exported, serving_root, 10)
    model_dir = serving_root / "digits"
    for wrong, words in ((model_dir, "is a model dir"), (model_dir / "10", "is a version dir")):
        before = sorted(p.relative_to(serving_root) for p in serving_root.rglob("*"))
        with pytest.raises(RegistryError, match=f"{wrong} {words}.*expected a serving root"):
            write_models_config(wrong)
        assert sorted(p.relative_to(serving_root) for p in serving_root.rglob("*")) == before


def test_a_single_file_manifest_leaves_a_version_dir_deleted_by_hand_out(exported, serving_root):
    """Not migrated yet, a manifest of before still keeps a hand-deleted version and its label out."""
    for version in (10, 20, 30):
        publish_digits(exported, serving_root, version)
    model_dir = serving_root / "digits"
    (model_dir / MANIFEST_FILE).write_text(json.dumps(read_manifest(model_dir)))  # the old single file
    shutil.rmtree(model_dir / "30")
    write_models_config(serving_root)
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert list(config.model_version_policy.specific.versions) == [10, 20]
    assert dict(config.version_labels) == {"stable": 10}  # canary's version is gone
    assert read_manifest(model_dir)["labels"] == {"stable": 10, "canary": 30}
