"""include/notify: the config section, events, signatures, bounded delivery and the record of attempts."""

from __future__ import annotations

import copy
import json
import time

import pytest

from include.config import NotificationsConfig, parse_pipeline_config
from include.errors import ConfigError, DataCheckError, QualityGateError, SignatureError
from include.notify import message
from include.notify.delivery import Policy, deliver
from include.notify.events import blocked_details, build_event, encode, event_id, run_url
from include.notify.record import read_deliveries, record_attempt
from include.notify.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature, signature_header, verify
from include.notify.webhook import post_event, shown_url
from tests.helpers import example_raw
from tests.receivers import WebhookReceiver, down_url

SECRET = "whsec-test-0123456789"
ROWS = [
    {"kind": "metric", "subject": "overall", "statistic": "eval_accuracy", "value": 0.93, "partition": None,
     "threshold": ">= 0.95", "source": "declared", "verdict": "fail"},
    {"kind": "metric", "subject": "overall", "statistic": "eval_loss", "value": 0.2, "partition": None,
     "threshold": "<= 1", "source": "declared", "verdict": "pass"},
]  # fmt: skip


def parse_notifications(section: dict) -> NotificationsConfig:
    """Returns the notifications of the example pipeline given `section` (ConfigError if refused)."""
    raw = copy.deepcopy(example_raw())
    raw["notifications"] = section
    return parse_pipeline_config(raw, "example.yaml").notifications


def refusal(section: dict) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_notifications(section)
    return str(raised.value)


def an_event(kind: str = "gate_blocked", **details) -> dict:
    return build_event(
        kind,
        identity=("digits_softmax", "manual__1", "validate_signatures", 1),
        pipeline="digits_softmax",
        model="digits",
        version=20261020000000,
        labels={"stable": 20261012000000, "canary": None},
        run={"dag_id": "digits_softmax", "run_id": "manual__1"},
        run_url="http://airflow.example.com/dags/digits_softmax/runs/manual__1",
        details=details,
    )


def quick(attempts: int = 3, timeout: float = 0.5) -> Policy:
    return Policy(attempts=attempts, timeout=timeout, backoff=0.05)


# --- config ---------------------------------------------------------------------------------------


def test_no_receivers_by_default():
    """A pipeline without `notifications:` subscribes to every event but has nowhere to send them."""
    settings = parse_pipeline_config(example_raw(), "example.yaml").notifications
    assert settings == NotificationsConfig() and settings.email is None and settings.webhooks == ()
    assert settings.events == ("run_failed", "gate_blocked", "approval_waiting", "label_moved")


def test_a_full_section_reads():
    """Email with approvers and a sender, two webhooks, an event subset, tries and timeout read as given."""
    settings = parse_notifications(
        {
            "events": ["gate_blocked", "label_moved"],
            "email": {"to": ["ml@example.com"], "approvers": ["lead@example.com"], "from_email": "a@b.io"},
            "webhooks": [
                {"url": "https://hooks.example.com/x?token=1", "connection": "hook"},
                {"url": "http://127.0.0.1:8099/", "connection": "local_hook"},
            ],
            "attempts": 2,
            "timeout_seconds": 1.5,
        }
    )
    assert settings.events == ("gate_blocked", "label_moved") and settings.email.connection == "smtp_default"
    assert [w.connection for w in settings.webhooks] == ["hook", "local_hook"]
    assert settings.attempts == 2 and settings.timeout_seconds == 1.5


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"email": {"to": ["ml-team"]}}, "notifications.email.to: expected an email address"),
        ({"email": {"to": []}}, "notifications.email.to: expected at least 1 item(s), got list []"),
        (
            {"email": {"to": ["a@b.io"], "from_email": "me"}},
            "notifications.email.from_email: expected an email",
        ),
        ({"webhooks": [{"url": "ftp://x.io/", "connection": "c"}]}, "expected an http:// or https:// URL"),
        ({"webhooks": [{"url": "https:///path", "connection": "c"}]}, "expected an http:// or https:// URL"),
        (
            {"webhooks": [{"url": "https://x.io:99999/", "connection": "c"}]},
            "expected an http:// or https://",
        ),
        (
            {"webhooks": [{"url": "https://u:pw@x.io/", "connection": "c"}]},
            "put the secret in the connection",
        ),
        ({"webhooks": [{"url": "https://x.io/#a", "connection": "c"}]}, "without a #fragment"),
        ({"webhooks": [{"url": "https://x.io/"}]}, "notifications.webhooks[0].connection: required key"),
        ({"events": ["run_failed", "deployed"]}, "notifications.events[1]: expected one of ['run_failed'"),
        ({"events": ["run_failed", "run_failed"]}, "expected each event once"),
        ({"attempts": 6}, "notifications.attempts: expected a value <= 5, got 6"),
        ({"timeout_seconds": 0}, "notifications.timeout_seconds: expected a value > 0, got 0"),
        ({"slack": {}}, "notifications.slack: unknown key"),
    ],
)
def test_bad_sections_are_refused_naming_the_key(section, expected):
    """Each bad value is refused with its dotted key and what was expected."""
    assert expected in refusal(section)


# --- events and messages --------------------------------------------------------------------------


def test_an_event_carries_the_envelope():
    """Event, id, time, pipeline, model, version, labels set (unset ones left out), run and its URL."""
    event = an_event(gate="quality_gate")
    assert set(event) == {
        "event", "event_id", "occurred_at", "pipeline", "model", "version", "labels", "run", "run_url",
        "details",
    }  # fmt: skip
    assert event["labels"] == {"stable": 20261012000000} and event["details"] == {"gate": "quality_gate"}
    assert json.loads(encode(event)) == event and b" " not in encode(event)


def test_event_ids_name_what_happened():
    """The same event gets the same id (a receiver drops the second); another try or run another one."""
    assert event_id("run_failed", "d", "r", "t", 1) == event_id("run_failed", "d", "r", "t", 1)
    assert event_id("run_failed", "d", "r", "t", 1) != event_id("run_failed", "d", "r", "t", 2)
    assert event_id("run_failed", "d", "r", "t", 1) != event_id("gate_blocked", "d", "r", "t", 1)


def test_the_run_url_is_the_ui_page_of_the_run():
    """Run ids with `+` and `:` are escaped in the path."""
    assert run_url("http://af:8080/", "digits_softmax", "manual__2026-10-12T00:00:00+00:00") == (
        "http://af:8080/dags/digits_softmax/runs/manual__2026-10-12T00%3A00%3A00%2B00%3A00"
    )


def test_blocked_details_come_from_the_cause_of_the_failure():
    """A failure raised from a QualityGateError or DataCheckError gives the failing rows; others none."""
    gate = QualityGateError("eval_accuracy", 0.93, ">= 0.95", report=ROWS)
    try:
        raise RuntimeError("quality gate failed") from gate  # as AirflowFailException(...) from err
    except RuntimeError as err:
        details = blocked_details(err)
    assert details["gate"] == "quality_gate" and details["failing_rows"] == 1
    assert details["report"] == [ROWS[0]]
    assert details["failed"] == ["overall: eval_accuracy 0.93 (expected >= 0.95, declared)"]
    data = DataCheckError({"checked": 2, "rows": ROWS}, ["overall: eval_accuracy 0.93"])
    assert blocked_details(data)["gate"] == "data_checks"
    assert blocked_details(QualityGateError("eval_loss", 3.0, "<= 1"))["failed"] == [
        "quality gate failed: eval_loss=3.000000, expected <= 1"
    ]
    assert blocked_details(RuntimeError("disk full")) is None and blocked_details(None) is None


def test_values_json_cannot_hold_are_made_plain():
    """A non-finite number in a report row becomes a string, so the body stays valid JSON."""
    event = an_event(report=[{"value": float("inf")}])
    assert event["details"]["report"] == [{"value": "inf"}]
    json.loads(encode(event).decode())


def test_email_subjects_and_bodies():
    """Each event's subject names the pipeline and what happened; the HTML escapes what people typed."""
    assert message.subject(an_event(gate="quality_gate")) == (
        "[savedmodel] digits_softmax: quality gate blocked version 20261020000000"
    )
    failed = an_event("run_failed", task_id="train", try_number=3, error="boom")
    assert (
        message.subject(failed) == "[savedmodel] digits_softmax: run failed in train (version 20261020000000)"
    )
    moved = an_event("label_moved", moved=[{"label": "stable", "previous": 1}], by="<b>eve</b>", reason="r")
    assert message.subject(moved) == "[savedmodel] digits_softmax: stable -> version 20261020000000"
    body = message.to_html(moved)
    assert "&lt;b&gt;eve&lt;/b&gt;" in body and "<b>eve" not in body
    assert '<a href="http://airflow.example.com/dags/digits_softmax/runs/manual__1">' in body


# --- signatures -----------------------------------------------------------------------------------


def test_a_signature_verifies_and_any_change_breaks_it():
    """The header signs timestamp and body; another body, secret or timestamp fails; old ones are refused."""
    body, now = b'{"event":"label_moved"}', 1_793_318_400
    header = signature_header(body, SECRET, now)
    assert (
        header == f"t={now},v1={signature(body, SECRET, now)}"
        and verify(body, header, SECRET, now=now) == now
    )
    cases = {
        "does not match": (body + b" ", header, SECRET, now),
        "does not match ": (body, header, "another-secret", now),
        "outside the 300 s window": (body, header, SECRET, now + 301),
        "outside the 300 s window ": (body, header, SECRET, now - 301),
        "no X-Savedmodel-Signature header": (body, None, SECRET, now),
        "expected one timestamp": (body, header.replace(f"t={now}", "t=soon"), SECRET, now),
        "expected a v1=<hex> signature": (body, f"t={now}", SECRET, now),
        "does not match  ": (body, header.replace(f"t={now}", f"t={now + 1}"), SECRET, now),
    }
    for words, (b, h, s, at) in cases.items():
        with pytest.raises(SignatureError, match=words.strip()):
            verify(b, h, s, now=at)


def test_any_of_several_signatures_may_match():
    """A header with two v1 signatures (a secret being rotated) verifies when either matches."""
    body, now = b"{}", 1_793_318_400
    header = f"t={now},v1={signature(body, 'old', now)},v1={signature(body, SECRET, now)}"
    assert verify(body, header, SECRET, now=now) == now


# --- delivery -------------------------------------------------------------------------------------


def post(receiver_url: str, event: dict):
    body = encode(event)
    return lambda timeout: post_event(receiver_url, body, secret=SECRET, event=event, timeout=timeout)


def test_a_receiver_gets_a_verified_event_once():
    """One try: the receiver verifies the signature, keeps the event under its id; the try is recorded."""
    attempts, event = [], an_event()
    with WebhookReceiver(SECRET).running() as receiver:
        assert deliver(post(receiver.url, event), event=event, channel="webhook", target="x",
                       policy=quick(), record=attempts.append)  # fmt: skip
    (request,) = receiver.requests
    assert request.verdict == "accepted" and request.event() == event
    assert request.headers[EVENT_ID_HEADER] == event["event_id"] and request.headers[SIGNATURE_HEADER]
    ((attempt),) = attempts
    assert attempt["outcome"] == "delivered" and attempt["answer"] == "HTTP 204" and attempt["attempt"] == 1


def test_a_receiver_that_is_down_costs_bounded_time_and_raises_nothing():
    """Connection refused: 3 tries, each recorded as failed, False returned well within the worst case."""
    attempts, event, policy = [], an_event(), quick(attempts=3, timeout=1.0)
    started = time.monotonic()
    delivered = deliver(post(down_url(), event), event=event, channel="webhook", target="down",
                        policy=policy, record=attempts.append)  # fmt: skip
    assert not delivered and time.monotonic() - started < policy.worst_case()
    assert [a["outcome"] for a in attempts] == ["failed"] * 3
    assert "Connection refused" in attempts[0]["error"] and {a["event_id"] for a in attempts} == {
        event["event_id"]
    }


def test_a_slow_receiver_is_cut_off_at_the_deadline_and_deduplicates_the_retry():
    """A receiver answering after 3 s: each try is cut at 0.4 s; it got the event twice and kept it once."""
    attempts, event, policy = [], an_event(), quick(attempts=2, timeout=0.4)
    with WebhookReceiver(SECRET, delay=3.0).running() as receiver:
        started = time.monotonic()
        delivered = deliver(post(receiver.url, event), event=event, channel="webhook", target="slow",
                            policy=policy, record=attempts.append)  # fmt: skip
        elapsed = time.monotonic() - started
    assert not delivered and elapsed < policy.worst_case() + 0.3, elapsed
    assert [a["outcome"] for a in attempts] == ["timed_out", "timed_out"]
    assert [r.verdict for r in receiver.requests] == ["accepted", "duplicate"]
    assert list(receiver.events) == [event["event_id"]]


def test_a_retry_after_a_server_error_is_signed_anew_and_delivered():
    """503 then 204: the second try carries the same body and event id and a valid fresh signature."""
    attempts, event = [], an_event()
    with WebhookReceiver(SECRET, statuses=[503]).running() as receiver:
        assert deliver(post(receiver.url, event), event=event, channel="webhook", target="x",
                       policy=quick(), record=attempts.append)  # fmt: skip
    assert [a["outcome"] for a in attempts] == ["failed", "delivered"] and attempts[0]["error"].startswith(
        "HTTP 503"
    )
    first, second = receiver.requests
    assert first.body == second.body and second.verdict == "duplicate"


def test_a_refusal_is_not_retried():
    """A receiver with another secret answers 401: one try, recorded, nothing more."""
    attempts, event = [], an_event()
    with WebhookReceiver("another-secret").running() as receiver:
        assert not deliver(post(receiver.url, event), event=event, channel="webhook", target="x",
                           policy=quick(), record=attempts.append)  # fmt: skip
    assert len(attempts) == 1 and attempts[0]["error"].startswith("HTTP 401")
    assert receiver.requests[0].verdict.startswith("refused: the signature does not match")


def test_any_error_of_a_try_is_recorded_not_raised():
    """A send that raises something unexpected, and a record that cannot be written, raise nothing."""

    def broken_send(timeout):
        raise KeyError("surprise")

    def broken_record(attempt):
        raise OSError("disk full")

    assert not deliver(broken_send, event=an_event(), channel="email", target="x", policy=quick(attempts=2),
                       record=broken_record)  # fmt: skip


def test_the_shown_target_has_no_query_or_credentials():
    """What logs and records show of a URL leaves out its query string (tokens) and any userinfo."""
    assert shown_url("https://u:p@hooks.example.com/in?token=abc") == "https://hooks.example.com/in"


# --- the record of attempts -----------------------------------------------------------------------


def test_attempts_are_appended_one_line_each(tmp_path):
    """Each attempt is one JSON line under .notifications/; a torn last line is skipped when read."""
    model = tmp_path / "digits"
    for n in (1, 2):
        path = record_attempt(model, {"attempt": n, "outcome": "failed"})
    assert path == model / ".notifications" / "deliveries.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"attempt": 3, "outc')
    assert [a["attempt"] for a in read_deliveries(model)] == [1, 2]
    assert [a["attempt"] for a in read_deliveries(model, limit=1)] == [2]


def test_the_record_rotates_past_its_size(tmp_path, monkeypatch):
    """Past ROTATE_BYTES the file moves to deliveries.1.jsonl; reading gives both, oldest first."""
    monkeypatch.setattr("include.notify.record.ROTATE_BYTES", 200)
    for n in range(10):
        record_attempt(tmp_path, {"attempt": n, "padding": "x" * 40})
    assert (tmp_path / ".notifications" / "deliveries.1.jsonl").stat().st_size > 200
    assert (tmp_path / ".notifications" / "deliveries.jsonl").stat().st_size < 200
    assert [a["attempt"] for a in read_deliveries(tmp_path)][-3:] == [7, 8, 9]


def test_attempts_are_recorded_in_a_bucket(bucket):
    """A serving root in a bucket keeps the record there too, appended under the dir's own lease."""
    model = f"{bucket}/models/digits"
    record_attempt(model, {"attempt": 1})
    record_attempt(model, {"attempt": 2})
    assert [a["attempt"] for a in read_deliveries(model)] == [1, 2]


def test_the_runbooks_signature_check_agrees_with_the_signer():
    """The few lines of Python the runbook gives receivers accept our signature and refuse a changed body."""
    from include.config import PROJECT_ROOT

    text = (PROJECT_ROOT / "docs" / "runbook.md").read_text()
    start = text.index("```python\nimport hashlib", text.index("### Notifications"))
    code = text[start + len("```python\n") : text.index("```", start + 10)]
    namespace: dict = {}
    exec(compile(code, "runbook.md", "exec"), namespace)  # noqa: S102 - the docs' own example
    verified = namespace["verified"]
    body = b'{"event":"label_moved"}'
    assert verified(body, signature_header(body, SECRET), SECRET)
    assert not verified(body + b" ", signature_header(body, SECRET), SECRET)
    assert not verified(body, signature_header(body, SECRET, int(time.time()) - 301), SECRET)
    assert not verified(body, signature_header(body, "another"), SECRET)
