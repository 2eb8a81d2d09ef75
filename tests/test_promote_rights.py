"""The promote DAG's trigger guard (plugins/savedmodel_promote_rights.py), at the ASGI level.

Who may trigger what is Airflow's auth manager's answer: tests/e2e/test_registry_ui.py asks it
through the real API server (a user denied the pipeline's DAG is refused, the admin is not). Here:
what the middleware leaves alone, how it reads the caller's token, and that the body it read
reaches Airflow whole.
"""

from __future__ import annotations

import asyncio
import json

from plugins.savedmodel_promote_rights import MAX_BODY, PromoteRightsMiddleware, _token

TRIGGER = "/api/v2/dags/savedmodel_promote/dagRuns"


class Downstream:
    """An ASGI app that records the body it received and answers 201."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(app, method: str, path: str, chunks: list[bytes], headers=()) -> tuple[int, bytes]:
    """Sends one request through `app` in chunks; returns (status, body)."""
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    last = len(chunks) - 1
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < last} for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def test_other_requests_pass_untouched():
    """Other DAGs, other methods and other paths reach Airflow as they are, body and all."""
    downstream = Downstream()
    guard = PromoteRightsMiddleware(downstream)
    for method, path in (
        ("POST", "/api/v2/dags/digits_softmax/dagRuns"),
        ("GET", TRIGGER),
        ("POST", "/api/v2/dags/savedmodel_promote/dagRuns/run_1/clear"),
        ("POST", "/registry/api/models/digits/versions/1/labels"),
    ):
        assert call(guard, method, path, [b'{"conf": ', b"{}}"])[0] == 201
    assert downstream.bodies == [b'{"conf": {}}'] * 4


def test_an_anonymous_trigger_is_left_to_airflow_with_its_body_whole():
    """Without a token the guard decides nothing (Airflow answers 401); the body it read is replayed."""
    downstream = Downstream()
    body = json.dumps({"conf": {"pipeline": "digits_softmax", "reason": "x" * 5000}}).encode()
    chunks = [body[:100], body[100:4000], body[4000:]]
    assert call(PromoteRightsMiddleware(downstream), "POST", "/base" + TRIGGER, chunks)[0] == 201
    assert downstream.bodies == [body]


def test_a_body_too_big_to_check_is_refused():
    """A trigger whose body is over MAX_BODY is refused (403) before Airflow sees it."""
    downstream = Downstream()
    status, answer = call(PromoteRightsMiddleware(downstream), "POST", TRIGGER, [b"x" * (MAX_BODY + 1)])
    assert status == 403 and b"over" in answer and downstream.bodies == []


def test_the_callers_token_is_the_bearer_else_the_ui_cookie():
    """Like Airflow: an Authorization bearer token wins; else the UI's `_token` cookie."""
    assert _token({"headers": [(b"authorization", b"Bearer abc")]}) == "abc"
    assert _token({"headers": [(b"cookie", b"theme=dark; _token=xyz; other=1")]}) == "xyz"
    both = [(b"authorization", b"Bearer abc"), (b"cookie", b"_token=xyz")]
    assert _token({"headers": both}) == "abc"
    assert _token({"headers": [(b"authorization", b"Basic dXNlcg==")]}) is None
    assert _token({"headers": []}) is None
