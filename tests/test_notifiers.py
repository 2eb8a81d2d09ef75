"""plugins/savedmodel_notifiers.py: Airflow notifiers, a real SMTP server and a checking receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException

from include.config import PROJECT_ROOT, PipelineConfig, load_pipeline_config
from include.errors import QualityGateError
from include.notify.delivery import Policy
from include.notify.record import read_deliveries
from plugins.savedmodel_notifiers import (
    GRACE_SECONDS,
    PipelineNotifier,
    approval_notifier,
    failure_notifiers,
    notify_label_moved,
)
from plugins.savedmodel_promotion import approve_stable
from tests.helpers import make_raw, write_pipeline
from tests.receivers import SmtpServer, WebhookReceiver, body_text
from tools.local_airflow import free_port

SECRET = "whsec-test-0123456789"
BASE_URL = "http://airflow.test:8080"
RUN_ID = "manual__2026-10-20T00:00:00+00:00"
ROWS = [
    {"kind": "metric", "subject": "overall", "statistic": "eval_accuracy", "value": 0.93, "partition": None,
     "threshold": ">= 0.95", "source": "declared", "verdict": "fail"},
    {"kind": "metric", "subject": "overall", "statistic": "eval_loss", "value": 0.2, "partition": None,
     "threshold": "<= 1", "source": "declared", "verdict": "pass"},
]  # fmt: skip


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET).running() as running:
        yield running


@pytest.fixture
def smtp():
    with SmtpServer().running() as running:
        yield running


@pytest.fixture
def connections(monkeypatch, smtp):
    """The SMTP server's and the webhook secret's Airflow connections, as a deployment gives them."""
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_SMTP", smtp.connection())
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_HOOK", json.dumps({"conn_type": "generic", "password": SECRET}))
    monkeypatch.setenv("AIRFLOW_CONN_NO_SECRET", json.dumps({"conn_type": "generic"}))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)


def pipeline(tmp_path: Path, url: str, **notifications) -> PipelineConfig:
    """Returns the example pipeline (written into tmp_path/pipelines) sending to `url` and by email."""
    raw = make_raw(tmp_path / "store", tmp_path / "data")
    raw["notifications"] = {
        "email": {
            "to": ["ml-team@example.com"],
            "approvers": ["lead@example.com"],
            "connection": "notify_smtp",
        },
        "webhooks": [{"url": url, "connection": "notify_hook"}],
        **notifications,
    }
    return load_pipeline_config(write_pipeline(tmp_path / "pipelines", raw))


def context(
    *, task_id="validate_signatures", dag_id="digits_softmax", exception=None, params=None, task=None
):
    """Returns the parts of an Airflow context the notifiers read."""
    ti = SimpleNamespace(
        dag_id=dag_id, run_id=RUN_ID, task_id=task_id, try_number=1, map_index=-1,
        xcom_pull=lambda task_ids, key: 20261020000000 if task_ids == "train" else None,
    )  # fmt: skip
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=RUN_ID, run_after=None, triggering_user_name="alice")
    return {
        "ti": ti, "task_instance": ti, "dag_run": dag_run, "params": params or {}, "task": task,
        "exception": exception, "logical_date": None,
    }  # fmt: skip


def gate_failure() -> AirflowFailException:
    """Returns the exception a task fails with when the quality gate blocks it."""
    try:
        raise AirflowFailException("quality gate failed") from QualityGateError(
            "eval_accuracy", 0.93, ">= 0.95", report=ROWS
        )
    except AirflowFailException as err:
        return err


def deliveries(config: PipelineConfig) -> list[dict]:
    return read_deliveries(config.storage.serving_root / config.model.name)


def test_pipelines_without_receivers_get_no_failure_callback(monkeypatch):
    """The shipped pipelines name no receivers: their tasks carry no callback; the promote DAG's always do."""
    monkeypatch.delenv("SAVEDMODEL_PIPELINES_DIR", raising=False)
    dags = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags
    assert all(not task.on_failure_callback for task in dags["digits_softmax"].tasks)
    promote = dags["savedmodel_promote"]
    assert all(isinstance(t.on_failure_callback[0], PipelineNotifier) for t in promote.tasks)
    (waiting,) = promote.get_task("approve_stable").notifiers
    assert waiting.event == "approval_waiting" and waiting.pipeline is None


def test_pipelines_with_receivers_notify_when_a_task_fails_for_good(monkeypatch, tmp_path):
    """With receivers, every task of the pipeline's DAG has the notifier as on_failure_callback."""
    config = pipeline(tmp_path, "https://hooks.example.com/in")
    monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(tmp_path / "pipelines"))
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["digits_softmax"]
    for task in dag.tasks:
        (notifier,) = task.on_failure_callback
        assert (
            isinstance(notifier, PipelineNotifier) and notifier.pipeline == config and notifier.event is None
        )
    assert failure_notifiers(pipeline(tmp_path, "https://x.io/", events=["label_moved"])) == []


def test_a_blocked_run_sends_the_report_by_email_and_webhook(tmp_path, receiver, smtp, connections):
    """gate_blocked: the receiver verifies the signed event with the failing rows; the email names them."""
    config = pipeline(tmp_path, receiver.url)
    PipelineNotifier(pipeline=config)(context(exception=gate_failure()))
    (event,) = receiver.wait_for("gate_blocked")
    assert event["pipeline"] == "digits_softmax" and event["model"] == "digits"
    assert event["version"] == 20261020000000 and event["labels"] == {}
    assert (
        event["run_url"] == f"{BASE_URL}/dags/digits_softmax/runs/manual__2026-10-20T00%3A00%3A00%2B00%3A00"
    )
    assert event["details"]["gate"] == "quality_gate" and event["details"]["report"] == [ROWS[0]]
    assert event["details"]["task_id"] == "validate_signatures"
    (mail,) = smtp.wait_for(1)
    assert mail["Subject"] == "[savedmodel] digits_softmax: quality gate blocked version 20261020000000"
    assert mail["To"] == "ml-team@example.com" and mail["From"] == "airflow@example.com"
    assert mail["X-Savedmodel-Event-Id"] == event["event_id"]
    assert "overall: eval_accuracy 0.93 (expected &gt;= 0.95, declared)" in body_text(mail)
    assert sorted((a["channel"], a["outcome"]) for a in deliveries(config)) == [
        ("email", "delivered"),
        ("webhook", "delivered"),
    ]


def test_other_failures_send_run_failed(tmp_path, receiver, connections):
    """A failure no gate caused is run_failed with the task, try and error (or that none was reported:
    a task the scheduler failed); so is a blocked run when gate_blocked is not subscribed."""
    config = pipeline(tmp_path, receiver.url)
    PipelineNotifier(pipeline=config)(context(task_id="train", exception=OSError("No space left on device")))
    (event,) = receiver.wait_for("run_failed")
    assert event["details"] == {"task_id": "train", "try_number": 1, "error": "No space left on device"}
    PipelineNotifier(pipeline=config)(context(task_id="export_savedmodel", exception=None))
    assert receiver.wait_for("run_failed", 2)[1]["details"]["error"].startswith("no error reported")
    only_failures = pipeline(tmp_path, receiver.url, events=["run_failed"])
    PipelineNotifier(pipeline=only_failures)(context(exception=gate_failure()))
    assert receiver.wait_for("run_failed", 3)[2]["details"]["error"] == "quality gate failed"


def test_approval_waiting_goes_to_the_approvers_with_the_link(
    monkeypatch, tmp_path, receiver, smtp, connections
):
    """As the approval starts waiting: approvers get the Required actions link of the task, the request."""
    config = pipeline(tmp_path, receiver.url)
    monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(tmp_path / "pipelines"))
    params = {"pipeline": "digits_softmax", "version": 20261012000000, "label": "stable", "reason": "better"}
    operator = approve_stable()
    (notifier,) = operator.notifiers
    notifier(context(task_id="approve_stable", dag_id="savedmodel_promote", params=params, task=operator))
    (event,) = receiver.wait_for("approval_waiting")
    details = event["details"]
    assert details["approve_url"] == (
        f"{BASE_URL}/dags/savedmodel_promote/runs/{RUN_ID}/tasks/approve_stable/required_actions?map_index=-1"
    )
    assert details["version_url"] == f"{BASE_URL}/registry/models/digits/versions/20261012000000"
    assert (details["label"], details["requested_by"], details["reason"]) == ("stable", "alice", "better")
    assert event["version"] == 20261012000000
    (mail,) = smtp.wait_for(1)
    assert smtp.envelopes == [{"from": "airflow@example.com", "to": ["lead@example.com"]}]
    assert mail["Subject"] == "[savedmodel] digits_softmax: approve stable -> version 20261012000000?"
    assert "required_actions?map_index=-1" in body_text(mail)
    assert deliveries(config)


def test_a_label_move_names_what_moved_and_what_it_replaced(tmp_path, receiver, connections):
    """label_moved: the labels, the version they pointed at before, who and why."""
    config = pipeline(tmp_path, receiver.url)
    moved = [{"label": "canary", "previous": 20261021000000}]
    ctx = context(task_id="move_label", dag_id="savedmodel_promote")
    notify_label_moved(ctx, config, 20261012000000, moved, by="bob", reason="rollback drill")
    (event,) = receiver.wait_for("label_moved")
    assert event["details"] == {"moved": moved, "by": "bob", "reason": "rollback drill"}
    assert event["version"] == 20261012000000


def test_down_and_slow_receivers_neither_fail_nor_hold_up_the_task(monkeypatch, tmp_path, connections):
    """SMTP refused and a webhook answering late: the notifier returns within the bound, raising nothing,
    with every try recorded."""
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_SMTP", SmtpServer(port=free_port()).connection())  # nobody there
    with WebhookReceiver(SECRET, delay=5.0).running() as slow:
        config = pipeline(tmp_path, slow.url, attempts=2, timeout_seconds=0.5)
        email = config.notifications.email.model_copy(update={"connection": "dead_smtp"})
        config = config.model_copy(
            update={"notifications": config.notifications.model_copy(update={"email": email})}
        )
        started = time.monotonic()
        PipelineNotifier(pipeline=config)(context(exception=RuntimeError("boom")))
        elapsed = time.monotonic() - started
    assert elapsed < Policy(attempts=2, timeout=0.5).worst_case() + GRACE_SECONDS, elapsed
    outcomes = sorted((a["channel"], a["attempt"], a["outcome"]) for a in deliveries(config))
    assert outcomes == [("email", 1, "failed"), ("email", 2, "failed"), ("webhook", 1, "timed_out"),
                        ("webhook", 2, "timed_out")]  # fmt: skip
    assert "Connection refused" in next(a["error"] for a in deliveries(config) if a["channel"] == "email")
    assert [r.verdict for r in slow.requests] == ["accepted", "duplicate"]


def test_a_webhook_without_a_secret_is_recorded_and_not_retried(tmp_path, receiver, connections):
    """A connection without a password: one failed try naming it, nothing sent unsigned."""
    config = pipeline(tmp_path, receiver.url, email=None)
    hook = config.notifications.webhooks[0].model_copy(update={"connection": "no_secret"})
    config = config.model_copy(
        update={"notifications": config.notifications.model_copy(update={"webhooks": (hook,)})}
    )
    PipelineNotifier(pipeline=config)(context(exception=RuntimeError("boom")))
    (attempt,) = deliveries(config)
    assert attempt["outcome"] == "failed" and "'no_secret' has no password" in attempt["error"]
    assert receiver.requests == []


def test_events_not_subscribed_send_nothing(tmp_path, receiver, connections):
    """A pipeline subscribed to label_moved only sends nothing on a failure, and records nothing."""
    config = pipeline(tmp_path, receiver.url, events=["label_moved"])
    PipelineNotifier(pipeline=config)(context(exception=gate_failure()))
    assert receiver.requests == [] and deliveries(config) == []
    assert approval_notifier().event == "approval_waiting"
