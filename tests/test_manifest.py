"""The manifest: its format, labels on publish, label moves, promote/rollback and retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.errors import RegistryError
from include.manifest import baseline, dumps_manifest, promote, read_manifest, set_label
from tests.helpers import parse_models_config, publish_digits


def labels(serving_root: Path) -> dict:
    return read_manifest(serving_root / "digits")["labels"]


def test_dumps_manifest_is_json_with_one_line_per_version_in_numeric_order():
    """The manifest text parses back to the same dict, one line per version, 9 before 10."""
    manifest = {
        "model": "digits",
        "labels": {"stable": 9},
        "versions": {"9": {"status": "published"}, "10": {"status": "published"}},
        "history": [{"event": "label", "version": 9}],
    }
    text = dumps_manifest(manifest)
    assert json.loads(text) == manifest
    version_lines = [line.strip() for line in text.splitlines() if line.strip().startswith(('"9"', '"10"'))]
    assert version_lines == ['"9": {"status": "published"},', '"10": {"status": "published"}']


def test_baseline_is_stable_else_the_newest_published_version():
    """A candidate is compared with `stable`; without a published stable, with the newest version."""
    versions = {"1": {"status": "published"}, "2": {"status": "published"}, "3": {"status": "deleted"}}
    assert baseline({"labels": {"stable": 1}, "versions": versions}) is versions["1"]
    assert baseline({"labels": {"stable": 3}, "versions": versions}) is versions["2"]
    assert baseline({"labels": {}, "versions": {}}) is None


def test_first_version_is_stable_and_canary(exported, serving_root):
    """With nothing served yet, the first version gets both labels."""
    assert publish_digits(exported, serving_root, 10).labels == ["canary", "stable"]
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_newer_version_becomes_canary_and_backfill_gets_no_label(exported, serving_root):
    """A newer version is canary (stable stays); an older, backfilled one is left unlabelled."""
    publish_digits(exported, serving_root, 10)
    assert publish_digits(exported, serving_root, 20).labels == ["canary"]
    assert publish_digits(exported, serving_root, 5, run_type="backfill").labels == []
    assert labels(serving_root) == {"canary": 20, "stable": 10}


def test_set_label_records_who_and_why(exported, serving_root):
    """Moving a label appends who, why and the previous version to the history."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
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
    publish_digits(exported, serving_root, 10)
    with pytest.raises(RegistryError, match=message):
        set_label(serving_root / "digits", label, version, by="bob", reason=reason)
    assert labels(serving_root) == {"canary": 10, "stable": 10}


def test_promote_rolls_back_to_a_loadable_version(exported, serving_root):
    """Rollback: stable goes back to the older version, and models.config follows."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    set_label(serving_root / "digits", "stable", 20, by="alice", reason="promote")
    promote(serving_root, "digits", 10, "stable", by="bob", reason="v20 misbehaves")
    (config,) = parse_models_config(serving_root).model_config_list.config
    assert config.version_labels["stable"] == 10 and config.version_labels["canary"] == 20


def test_promote_refuses_a_version_that_does_not_load(exported, serving_root):
    """A version whose files look whole but that TensorFlow cannot load gets no label."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
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
        publish_digits(exported, serving_root, version, keep_versions=2)
    result = publish_digits(exported, serving_root, 40, keep_versions=2)
    # stable=10 (first publish) is protected; 20 is the oldest unlabelled one.
    assert result.deleted == [20]
    on_disk = sorted(int(p.name) for p in (serving_root / "digits").iterdir() if p.name.isdigit())
    assert on_disk == [10, 30, 40]
    manifest = read_manifest(serving_root / "digits")
    assert manifest["versions"]["20"]["status"] == "deleted"
    assert any(e["event"] == "delete" and e["version"] == 20 for e in manifest["history"])
