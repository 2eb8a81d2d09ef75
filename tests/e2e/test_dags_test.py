"""End to end through Airflow (`airflow dags test`): a run publishes a servable version.

The pipeline sends its notifications to a webhook receiver that checks signatures and an SMTP
server, both run by this module on loopback: the runs below publish (label_moved), get blocked
by the quality gate (gate_blocked) and move a label back (label_moved); a refused promotion
fails (run_failed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from include.config import PROJECT_ROOT
from include.notify.record import read_deliveries
from include.notify.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature, verify
from include.registry.store import read_manifest
from include.train.features import request_examples
from include.versions import run_work_dir
from tests.helpers import (
    assert_complete,
    checkpoint_scores,
    eval_sample,
    example_raw,
    example_values,
    make_raw,
    score_in_fresh_process,
    write_pipeline,
)
from tests.receivers import SmtpServer, WebhookReceiver, body_text

pytestmark = pytest.mark.e2e

LOGICAL_DATE = "2026-10-12T00:00:00+00:00"
VERSION = "20261012000000"


SECRET = "whsec-e2e-5f0c1b7d9a"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "notifications"


@pytest.fixture(scope="module")
def receivers():
    """A webhook receiver that checks signatures and an SMTP server, on loopback for the whole module."""
    with WebhookReceiver(SECRET).running() as hook, SmtpServer().running() as smtp:
        yield hook, smtp


@pytest.fixture(scope="module")
def airflow_env(airflow_env, example_data, receivers):
    """The module's Airflow home, its pipeline notifying the receivers through two Airflow connections."""
    hook, smtp = receivers
    raw = make_raw(airflow_env.root, example_data)
    raw["notifications"] = {
        "email": {"to": ["ml-team@example.com"], "connection": "notify_smtp"},
        "webhooks": [{"url": hook.url, "connection": "notify_hook"}],
    }
    write_pipeline(airflow_env.pipelines, raw)
    airflow_env.env["AIRFLOW_CONN_NOTIFY_SMTP"] = smtp.connection()
    airflow_env.env["AIRFLOW_CONN_NOTIFY_HOOK"] = json.dumps({"conn_type": "generic", "password": SECRET})
    return airflow_env


@pytest.fixture(scope="module")
def first_run(airflow_env):
    """Runs the example DAG once for 2026-10-12 and returns the CLI result."""
    return airflow_env.run("dags", "test", "digits_softmax", LOGICAL_DATE)


def json_output(done) -> list:
    """Returns the JSON list an `airflow ... -o json` command printed on stdout."""
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("[")))


def model_dir(airflow_env) -> Path:
    return airflow_env.root / "serving" / "digits"


def test_run_publishes_a_complete_version(airflow_env, first_run):
    """The DAG run publishes version YYYYMMDDHHMMSS of its logical date, complete."""
    assert "state=success" in first_run.stdout + first_run.stderr
    assert_complete(model_dir(airflow_env) / VERSION)
    assert [p.name for p in model_dir(airflow_env).iterdir() if p.name.isdigit()] == [VERSION]


def test_manifest_records_the_run(airflow_env, first_run):
    """The manifest entry names the run, its data, metrics, the config it ran and the export check."""
    entry = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    assert entry["dag_id"] == "digits_softmax" and entry["logical_date"] == LOGICAL_DATE
    assert entry["data"]["last_partition"] == "dt=2026-10-11"
    assert entry["metrics"]["eval_accuracy"] >= 0.9
    assert len(entry["signature_fingerprint"]) == 64
    yaml_bytes = (airflow_env.pipelines / "digits_softmax.yaml").read_bytes()
    assert entry["config"]["sha256"] == hashlib.sha256(yaml_bytes).hexdigest()
    assert Path(entry["config"]["snapshot"]).read_bytes() == yaml_bytes
    assert entry["verification"]["signatures"] == 2 and entry["verification"]["warmup_records"] == 2


def test_published_model_scores_like_the_trained_one(airflow_env, first_run, tmp_path, session_config):
    """A fresh process classifies tf.Examples with the run's checkpoint scores (1e-5)."""
    entry = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    checkpoint = str(
        run_work_dir(airflow_env.root / "exports", "digits", entry["run_id"]) / "checkpoint" / "model.ckpt"
    )
    sample = eval_sample(checkpoint)
    expected = checkpoint_scores(session_config, checkpoint, sample)
    served = score_in_fresh_process(
        model_dir(airflow_env) / VERSION, request_examples(sample, session_config), tmp_path
    )
    np.testing.assert_allclose(served["scores"], expected, atol=1e-5)
    labels = np.array([example_values(record)["label"][0] for record in sample])
    accuracy = (np.array([int(row[0]) for row in served["classes"]]) == labels).mean()
    assert accuracy >= 0.8


def test_rerun_of_the_same_date_is_idempotent(airflow_env, first_run):
    """Running the same date again republishes identical bytes: a no-op success."""
    before = read_manifest(model_dir(airflow_env))["versions"][VERSION]["content_digest"]
    airflow_env.run("dags", "test", "digits_softmax", LOGICAL_DATE)
    after = read_manifest(model_dir(airflow_env))["versions"][VERSION]
    assert after["content_digest"] == before and after["last_publish"] == "unchanged"


# Trains a worse model than the 2,000-step one published first (about 0.92 held-out accuracy on
# 2026-10-20's data: above min_accuracy 0.9, below the first version's minus max_accuracy_drop).
WEAK = {"steps": 300, "learning_rate": 0.05}
FORCED_DATE, FORCED_VERSION = "2026-10-21T00:00:00+00:00", 20261021000000


@pytest.fixture(scope="module")
def forced_version(airflow_env, first_run) -> dict:
    """Publishes a weak model, newer than the first, with force_publish; returns its manifest entry."""
    forced = {**WEAK, "force_publish": True, "force_reason": "accept a smaller model for the drill"}
    airflow_env.run("dags", "test", "digits_softmax", FORCED_DATE, "-c", json.dumps(forced))
    return read_manifest(model_dir(airflow_env))["versions"][str(FORCED_VERSION)]


@pytest.fixture(scope="module")
def blocked_run(airflow_env, first_run):
    """Runs 2026-10-20 with the weak settings, which the quality gate blocks; returns the CLI result."""
    return airflow_env.run(
        "dags", "test", "digits_softmax", "2026-10-20T00:00:00+00:00", "-c", json.dumps(WEAK), check=False
    )


def test_quality_gate_blocks_a_regression(airflow_env, blocked_run):
    """steps=300 at learning rate 0.05 trains a worse model than the served one: the gate refuses it."""
    done = blocked_run
    assert "quality gate failed: eval_accuracy=" in done.stdout + done.stderr
    assert "max_accuracy_drop 0.02" in done.stdout + done.stderr
    assert not (model_dir(airflow_env) / "20261020000000").exists()


def test_force_publish_overrides_the_gate_with_a_reason(airflow_env, forced_version):
    """With force_publish and a reason the weak model is published; the override is recorded."""
    assert forced_version["hyperparameters"]["steps"] == 300
    assert forced_version["quality_gate"]["verdict"] == "forced"
    assert forced_version["force_reason"] == "accept a smaller model for the drill"
    assert_complete(model_dir(airflow_env) / str(FORCED_VERSION))


def test_backfilled_older_version_skips_the_regression_check(airflow_env, first_run):
    """A version older than the served one cannot displace it: only absolute thresholds apply."""
    airflow_env.run(
        "dags",
        "test",
        "digits_softmax",
        "2026-10-25T00:00:00+00:00",
        "-c",
        json.dumps({**WEAK, "version": 8}),
    )
    entry = read_manifest(model_dir(airflow_env))["versions"]["8"]
    assert entry["quality_gate"]["verdict"] == "passed" and entry["quality_gate"]["baseline_version"] is None
    assert "8" not in {str(v) for v in read_manifest(model_dir(airflow_env))["labels"].values()}


def test_broken_yaml_is_listed_as_an_import_error(airflow_env, first_run):
    """`airflow dags list-import-errors` names the broken file and key; the good DAG stays."""
    bad = example_raw()
    bad.update(name="broken_pipeline", retries="often")
    write_pipeline(airflow_env.pipelines, bad, "broken.yaml")
    try:
        airflow_env.run("dags", "reserialize", check=False)
        # list-import-errors exits 1 when there are errors, by design.
        errors = json_output(airflow_env.run("dags", "list-import-errors", "-o", "json", check=False))
        dags = json_output(airflow_env.run("dags", "list", "-o", "json"))
    finally:
        (airflow_env.pipelines / "broken.yaml").unlink()
    (error,) = errors
    assert error["filepath"] == "pipeline_config_errors.py"
    assert (
        "broken.yaml" in error["error"] and "retries: expected an integer, got str 'often'" in error["error"]
    )
    assert sorted(d["dag_id"] for d in dags) == [
        "digits_softmax",
        "savedmodel_asset_consumer",
        "savedmodel_promote",
    ]


def test_lineage_and_labels_after_runs(airflow_env, first_run):
    """The manifest carries signatures, gate verdict and code revision; labels follow the rules."""
    manifest = read_manifest(model_dir(airflow_env))
    entry = manifest["versions"][VERSION]
    assert set(entry["signatures"]) == {"predict_images", "serving_default"}
    assert entry["quality_gate"]["verdict"] == "passed"
    assert entry["tensorflow_version"] == "2.21.0" and entry["airflow_version"].startswith("3.")
    assert manifest["labels"]["stable"] == int(VERSION)  # the first publish; nothing moved it


def test_promote_dag_rolls_canary_back(airflow_env, forced_version, receivers):
    """The forced newer version became canary; the promote DAG moves canary back, records why,
    models.config follows, and label_moved names the version it replaced."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    assert read_manifest(model_dir(airflow_env))["labels"]["canary"] == FORCED_VERSION
    conf = {
        "pipeline": "digits_softmax",
        "version": int(VERSION),
        "label": "canary",
        "reason": "rollback drill",
    }
    airflow_env.run("dags", "test", "savedmodel_promote", "-c", json.dumps(conf))
    manifest = read_manifest(model_dir(airflow_env))
    assert manifest["labels"]["canary"] == int(VERSION)
    assert manifest["history"][-1]["reason"] == "rollback drill"
    assert manifest["history"][-1]["previous"] == FORCED_VERSION
    text = (airflow_env.root / "serving" / "models.config").read_text()
    (config,) = text_format.Parse(text, model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert config.version_labels["canary"] == int(VERSION)
    (moved,) = [
        e for e in receivers[0].wait_for("label_moved", 3) if e["run"]["dag_id"] == "savedmodel_promote"
    ]
    assert moved["details"]["moved"] == [{"label": "canary", "previous": FORCED_VERSION}]
    assert moved["details"]["reason"] == "rollback drill" and moved["version"] == int(VERSION)


def test_promote_dag_refuses_an_unknown_version(airflow_env, first_run, receivers):
    """Promoting a version that was never published fails, leaves the labels alone and sends run_failed
    (every request the receiver got carried a valid signature)."""
    before = read_manifest(model_dir(airflow_env))["labels"]
    conf = {"pipeline": "digits_softmax", "version": 123, "label": "stable", "reason": "typo"}
    done = airflow_env.run("dags", "test", "savedmodel_promote", "-c", json.dumps(conf), check=False)
    assert "not a published version" in done.stdout + done.stderr
    assert read_manifest(model_dir(airflow_env))["labels"] == before
    hook, _ = receivers
    (failed,) = hook.wait_for("run_failed")
    assert failed["run"]["dag_id"] == "savedmodel_promote" and failed["details"]["task_id"] == "route_request"
    assert "not a published version" in failed["details"]["error"] and failed["version"] == 123
    assert all(r.verdict in ("accepted", "duplicate") for r in hook.requests)


# --- notifications ------------------------------------------------------------------------------


def test_the_first_publish_notifies_the_labels_it_gave(first_run, receivers):
    """label_moved for the first version: canary and stable, set from nothing, by the publish."""
    hook, _ = receivers
    (event,) = [
        e
        for e in hook.wait_for("label_moved")
        if e["run"]["dag_id"] == "digits_softmax" and e["version"] == int(VERSION)
    ]
    assert event["details"] == {
        "moved": [{"label": "canary", "previous": None}, {"label": "stable", "previous": None}],
        "by": "publish",
        "reason": "automatic on publish",
    }
    assert event["labels"] == {"canary": int(VERSION), "stable": int(VERSION)}
    assert event["run"]["task_id"] == "publish_version" and "/dags/digits_softmax/runs/" in event["run_url"]


def test_a_blocked_run_notifies_the_report_signed_and_by_email(airflow_env, blocked_run, receivers):
    """gate_blocked reaches the receiver (signature checked) with the failing rows, and the inbox;
    both deliveries are recorded. The request and the email are kept in test-artifacts/notifications/."""
    hook, smtp = receivers
    (event,) = hook.wait_for("gate_blocked")
    assert event["version"] == 20261020000000 and event["details"]["gate"] == "quality_gate"
    assert event["details"]["task_id"] == "validate_signatures"
    report = event["details"]["report"]
    assert report and all(row["verdict"] == "fail" for row in report)
    assert any(row["subject"] == "metric eval_accuracy" for row in report)
    request = next(r for r in hook.requests if r.headers[EVENT_ID_HEADER] == event["event_id"])
    assert verify(request.body, request.headers[SIGNATURE_HEADER], SECRET) > 0
    (mail,) = [m for m in smtp.wait_for(1) if m["X-Savedmodel-Event-Id"] == event["event_id"]]
    assert mail["Subject"] == "[savedmodel] digits_softmax: quality gate blocked version 20261020000000"
    assert "eval_accuracy" in body_text(mail) and event["run_url"] in body_text(mail)
    attempts = [a for a in read_deliveries(model_dir(airflow_env)) if a["event_id"] == event["event_id"]]
    assert sorted((a["channel"], a["outcome"]) for a in attempts) == [
        ("email", "delivered"),
        ("webhook", "delivered"),
    ]
    save_artifacts("gate_blocked", request, mail)


def save_artifacts(name: str, request, mail) -> None:
    """Keeps a webhook request (headers, exact body) and an email (as received) for the docs and notes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shown = ("Content-Type", "User-Agent", "X-Savedmodel-Event", EVENT_ID_HEADER, SIGNATURE_HEADER)
    (ARTIFACTS / f"webhook-{name}.headers.txt").write_text(
        "".join(f"{key}: {request.headers[key]}\n" for key in shown)
    )
    (ARTIFACTS / f"webhook-{name}.body.json").write_bytes(request.body)
    stamp = verify(request.body, request.headers[SIGNATURE_HEADER], SECRET, tolerance=10**9)
    (ARTIFACTS / f"webhook-{name}.signature-check.txt").write_text(
        f"secret (the connection's password): {SECRET}\n"
        f"HMAC-SHA256 of '{stamp}.' + the {len(request.body)} body bytes: "
        f"{signature(request.body, SECRET, stamp)}\n"
        f"{SIGNATURE_HEADER}: {request.headers[SIGNATURE_HEADER]}\nverified: yes\n"
    )
    (ARTIFACTS / f"email-{name}.eml").write_bytes(mail.as_bytes())
    (ARTIFACTS / f"email-{name}.html").write_text(body_text(mail))
