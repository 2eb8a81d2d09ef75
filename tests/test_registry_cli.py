"""The registry CLI: the on-call versions table, and models.config written on demand."""

from __future__ import annotations

import shutil

from include.registry.cli import main, versions_table
from include.registry.serving_config import MODELS_CONFIG_FILE
from include.registry.store import read_manifest
from tests.helpers import make_raw, parse_models_config, publish_digits, write_pipeline


def test_versions_table_and_cli(exported, serving_root, capsys):
    """The on-call table shows version, date, run type, accuracy and labels, newest first."""
    publish_digits(exported, serving_root, 10)
    publish_digits(exported, serving_root, 20)
    table = versions_table(read_manifest(serving_root / "digits"))
    header, first, second = table.splitlines()
    assert header.split()[:4] == ["VERSION", "LOGICAL", "DATE", "RUN"]
    assert first.split()[0] == "20" and "canary" in first and "0.9500" in first
    assert second.split()[0] == "10" and "stable" in second
    shutil.copytree(serving_root / "digits" / "10", serving_root / "digits" / "99")
    assert main(["versions", str(serving_root / "digits")]) == 0
    out = capsys.readouterr().out
    assert table in out and "not in the manifest (not published by this pipeline): 99" in out


def test_versions_cli_finds_a_model_by_pipeline_name(exported, tmp_path, monkeypatch, capsys):
    """`versions <pipeline name>` looks the pipeline up and shows its model's table."""
    pipelines = tmp_path / "pipelines"
    write_pipeline(pipelines, make_raw(tmp_path, tmp_path / "data", name="lookup_me"))
    monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(pipelines))
    publish_digits(exported, tmp_path / "serving", 10)
    assert main(["versions", "lookup_me"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "10"
    assert main(["versions", "no_such_pipeline"]) == 2
    assert "no valid pipeline or model is named 'no_such_pipeline'" in capsys.readouterr().err


def test_models_config_cli_writes_an_empty_config_for_a_new_root(tmp_path, exported, capsys):
    """`models-config` gives TF Serving a valid file before the first publish, and the full one after."""
    root = tmp_path / "fresh" / "models"
    assert main(["models-config", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / MODELS_CONFIG_FILE)
    assert list(parse_models_config(root).model_config_list.config) == []
    publish_digits(exported, root, 7)
    (root / MODELS_CONFIG_FILE).unlink()
    assert main(["models-config", str(root)]) == 0
    assert [c.name for c in parse_models_config(root).model_config_list.config] == ["digits"]


def test_versions_table_shows_the_loss_of_a_regression_and_dashes_for_missing_metrics():
    """A regression's version has no accuracy: its held-out loss (MSE) shows, accuracy is '-'."""
    manifest = {
        "labels": {"stable": 20261025000000},
        "versions": {
            "20261025000000": {
                "metrics": {"eval_loss": 2966.78391, "eval_mae": 44.69},
                "status": "published",
            },
            "20261024000000": {"metrics": {"eval_loss": True}, "status": "published"},
        },
    }
    header, regression, odd = versions_table(manifest).splitlines()
    assert header.split()[5:7] == ["ACCURACY", "LOSS"]
    assert regression.split()[3:6] == ["-", "2966.7839", "stable"]  # no date, no run type: "-"
    assert odd.split()[3:5] == ["-", "-"]


def test_versions_and_rebuild_refuse_a_version_dir_naming_its_model_dir(exported, serving_root, capsys):
    """Given a version dir, `versions` and `rebuild` exit 1 naming it and the model dir to give instead."""
    publish_digits(exported, serving_root, 10)
    version_dir = serving_root / "digits" / "10"
    before = sorted(p.relative_to(serving_root) for p in serving_root.rglob("*"))
    for command in ("versions", "rebuild"):
        assert main([command, str(version_dir)]) == 1
        err = capsys.readouterr().err
        assert (
            f"{version_dir} is a version dir" in err and f"its model dir is {serving_root / 'digits'}" in err
        )
        assert "expected a model dir" in err
    assert sorted(p.relative_to(serving_root) for p in serving_root.rglob("*")) == before


def test_versions_marks_a_version_dir_deleted_by_hand_missing(exported, serving_root, capsys):
    """The newest dir removed by hand: its row reads `missing`, the others `published`."""
    for version in (10, 20):
        publish_digits(exported, serving_root, version)
    shutil.rmtree(serving_root / "digits" / "20")
    assert main(["versions", str(serving_root / "digits")]) == 0
    _, newest, oldest = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert newest.split()[0] == "20" and "missing" in newest.split() and "canary" in newest.split()
    assert oldest.split()[0] == "10" and "published" in oldest.split()


def test_versions_table_shows_each_versions_checks_verdict():
    """VERDICT is the worse of the data checks' and quality gate's verdicts; `-` when neither is recorded."""
    checks = {
        "5": {"data_checks": {"verdict": "blocked"}},
        "4": {"data_checks": {"verdict": "forced", "failed": []}, "quality_gate": {"verdict": "passed"}},
        "3": {"data_checks": {"verdict": "passed"}, "quality_gate": {"verdict": "forced", "checks": []}},
        "2": {"quality_gate": {"verdict": "passed", "baseline_version": None}},  # before the data checks
        "1": {"status": "published"},  # before the quality gate
    }
    manifest = {
        "labels": {"stable": 2},
        "versions": {v: {"status": "published", **e} for v, e in checks.items()},
    }
    header, *rows = versions_table(manifest).splitlines()
    assert header.split()[8:10] == ["VERDICT", "STATUS"]
    assert [row.split()[6] for row in rows] == ["blocked", "forced", "forced", "passed", "-"]
    assert rows[3].split()[5:8] == ["stable", "passed", "published"]
