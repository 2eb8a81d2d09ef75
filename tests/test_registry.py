"""The registry: labels on publish, promote/rollback, retention, models.config, the versions table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format

from include.publish import publish_version
from include.registry import (
    MODELS_CONFIG_FILE,
    RegistryError,
    main,
    promote,
    read_manifest,
    set_label,
    versions_table,
)

POLICY = {"version_policy": "latest", "num_latest": 2}


@pytest.fixture
def serving_root(tmp_path) -> Path:
    return tmp_path / "serving"


def publish(exported: Path, root: Path, version: int, **kwargs):
    """Publishes the session's export as `version` with a small lineage record."""
    record = {
        "run_type": kwargs.pop("run_type", "scheduled"),
        "metrics": {"eval_accuracy": 0.95},
        "logical_date": "2026-10-12T00:00:00+00:00",
    }
    return publish_version(exported, root, "digits", version, record=record, serving_policy=POLICY, **kwargs)


def labels(root: Path) -> dict:
    return read_manifest(root / "digits")["labels"]


def parse_models_config(root: Path):
    """Returns models.config parsed with TF Serving's own ModelServerConfig proto."""
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(
        (root / MODELS_CONFIG_FILE).read_text(), model_server_config_pb2.ModelServerConfig()
    )


def test_first_version_is_stable_and_canary(exported, serving_root):
    """With nothing served yet, the first version gets both labels."""
    assert publish(exported, serving_root, 10).labels == ["canary", "stable"]
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_newer_version_becomes_canary_and_backfill_gets_no_label(exported, serving_root):
    """A newer version is canary (stable stays); an older, backfilled one is left unlabelled."""
    publish(exported, serving_root, 10)
    assert publish(exported, serving_root, 20).labels == ["canary"]
    assert publish(exported, serving_root, 5, run_type="backfill").labels == []
    assert labels(serving_root) == {"canary": 20, "stable": 10}


def test_set_label_records_who_and_why(exported, serving_root):
    """Moving a label appends who, why and the previous version to the history."""
    publish(exported, serving_root, 10)
    publish(exported, serving_root, 20)
    manifest = set_label(serving_root / "digits", "stable", 20, by="alice", reason="canary looked good")
    assert manifest["labels"]["stable"] == 20
    event = manifest["history"][-1]
    assert (event["by"], event["reason"], event["previous"], event["version"]) == (
        "alice",
        "canary looked good",
        10,
        20,
    )


@pytest.mark.parametrize(
    ("label", "version", "reason", "message"),
    [
        ("stable", 99, "why", "not a published version"),
        ("golden", 10, "why", "label: expected one of"),
        ("stable", 10, " ", "needs a reason"),
    ],
)
def test_set_label_refuses_bad_requests(exported, serving_root, label, version, reason, message):
    """Unknown versions, unknown labels and missing reasons are refused; nothing changes."""
    publish(exported, serving_root, 10)
    with pytest.raises(RegistryError, match=message):
        set_label(serving_root / "digits", label, version, by="bob", reason=reason)
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_promote_rolls_back_to_a_loadable_version(exported, serving_root):
    """Rollback: stable goes back to the older version, and models.config follows."""
    publish(exported, serving_root, 10)
    publish(exported, serving_root, 20)
    set_label(serving_root / "digits", "stable", 20, by="alice", reason="promote")
    promote(serving_root, "digits", 10, "stable", by="bob", reason="v20 misbehaves")
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert config.version_labels["stable"] == 10 and config.version_labels["canary"] == 20


def test_promote_refuses_a_version_that_does_not_load(exported, serving_root):
    """A version whose files look whole but that TensorFlow cannot load gets no label."""
    publish(exported, serving_root, 10)
    publish(exported, serving_root, 20)
    # Well-formed protobuf framing (a meta_graphs field), meaningless content.
    (serving_root / "digits" / "20" / "saved_model.pb").write_bytes(b"\x12\x03abc")
    with pytest.raises(RegistryError, match="does not load"):
        promote(serving_root, "digits", 20, "stable", by="bob", reason="try")
    (serving_root / "digits" / "20" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(RegistryError, match=r"is not complete: saved_model\.pb is truncated or corrupted"):
        promote(serving_root, "digits", 20, "stable", by="bob", reason="try")
    assert labels(serving_root)["stable"] == 10


def test_retention_keeps_newest_and_labelled_versions(exported, serving_root):
    """keep_versions=2 deletes the oldest unlabelled versions only, and records the deletions."""
    for version in (10, 20, 30):
        publish(exported, serving_root, version, keep_versions=2)
    result = publish(exported, serving_root, 40, keep_versions=2)
    # stable=10 (first publish) is protected; 20 is the oldest unlabelled one.
    assert result.deleted == [20]
    on_disk = sorted(int(p.name) for p in (serving_root / "digits").iterdir() if p.name.isdigit())
    assert on_disk == [10, 30, 40]
    manifest = read_manifest(serving_root / "digits")
    assert manifest["versions"]["20"]["status"] == "deleted"
    assert any(e["event"] == "delete" and e["version"] == 20 for e in manifest["history"])


def test_models_config_is_a_valid_model_server_config(exported, serving_root):
    """models.config parses as ModelServerConfig: base path, policy with labelled versions, labels."""
    for version in (10, 20, 30):
        publish(exported, serving_root, version)
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert config.name == "digits" and config.model_platform == "tensorflow"
    assert config.base_path == str((serving_root / "digits").resolve())
    # latest 2 (20, 30) plus stable=10: TF Serving only labels loaded versions.
    assert list(config.model_version_policy.specific.versions) == [10, 20, 30]
    assert dict(config.version_labels) == {"stable": 10, "canary": 30}


def test_models_config_lists_every_model_under_the_root(exported, serving_root):
    """Two models under one serving root both appear in the one models.config."""
    publish(exported, serving_root, 10)
    publish_version(exported, serving_root, "letters", 1, serving_policy={"version_policy": "all"})
    configs = parse_models_config(serving_root).model_config_list.config
    assert [c.name for c in configs] == ["digits", "letters"]
    assert configs[1].model_version_policy.HasField("all")


def test_versions_table_and_cli(exported, serving_root, capsys):
    """The on-call table shows version, date, run type, accuracy and labels, newest first."""
    publish(exported, serving_root, 10)
    publish(exported, serving_root, 20)
    table = versions_table(read_manifest(serving_root / "digits"))
    header, first, second = table.splitlines()
    assert header.split()[:4] == ["VERSION", "LOGICAL", "DATE", "RUN"]
    assert first.split()[0] == "20" and "canary" in first and "0.9500" in first
    assert second.split()[0] == "10" and "stable" in second
    shutil.copytree(serving_root / "digits" / "10", serving_root / "digits" / "99")
    assert main(["versions", str(serving_root / "digits")]) == 0
    out = capsys.readouterr().out
    assert table in out and "not in the manifest (not published by this pipeline): 99" in out


def test_models_config_cli_writes_an_empty_config_for_a_new_root(tmp_path, exported, capsys):
    """`models-config` gives TF Serving a valid file before the first publish, and the full one after."""
    root = tmp_path / "fresh" / "models"
    assert main(["models-config", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / MODELS_CONFIG_FILE)
    assert list(parse_models_config(root).model_config_list.config) == []
    publish(exported, root, 7)
    (root / MODELS_CONFIG_FILE).unlink()
    assert main(["models-config", str(root)]) == 0
    assert [c.name for c in parse_models_config(root).model_config_list.config] == ["digits"]
