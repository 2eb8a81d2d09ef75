"""TF Serving's models.config: valid ModelServerConfig, labelled versions kept loaded, every model."""

from __future__ import annotations

import json

from include.registry.publish import publish_version
from include.registry.serving_config import render_models_config
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
