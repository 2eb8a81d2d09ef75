"""Receivers of notifications that the tests run on loopback: a webhook receiver and an SMTP server.

`WebhookReceiver` is what a careful receiver does: it checks each request's signature and
timestamp (include/notify/signing.py `verify`), answers 401 to a bad one, and keeps one event per
event id (a retried delivery is answered 200 but counted as a duplicate). It can be slow (answer
after `delay` seconds, having taken the event) or answer with given statuses first.
`SmtpServer` is aiosmtpd's, keeping every message it accepts.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from include.errors import SignatureError
from include.notify.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from tools.local_airflow import free_port


@dataclass
class Received:
    """One request the webhook receiver got: its headers, raw body, and what the receiver made of it."""

    headers: dict[str, str]
    body: bytes
    verdict: str  # accepted, duplicate, refused: <why>

    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that verifies signatures and de-duplicates events by id."""

    secret: str
    delay: float = 0.0
    statuses: list[int] = field(default_factory=list)  # answered first, one a request; then 204
    requests: list[Received] = field(default_factory=list)
    events: dict[str, dict] = field(default_factory=dict)  # event id -> event, accepted once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/savedmodel?source=test"

    def accepted(self, kind: str | None = None) -> list[dict]:
        """Returns the distinct events accepted (of one kind), in the order they came."""
        return [e for e in self.events.values() if kind is None or e["event"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 30) -> list[dict]:
        """Returns the accepted events of a kind once there are `count`; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(self.accepted(kind)) < count:
            assert time.monotonic() < deadline, f"no {count} {kind} events in {timeout} s: {self.requests}"
            time.sleep(0.05)
        return self.accepted(kind)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Returns the status and text the receiver answers a request with, recording it."""
        try:
            verify(body, headers.get(SIGNATURE_HEADER), self.secret)
        except SignatureError as err:
            self.requests.append(Received(headers, body, f"refused: {err}"))
            return 401, str(err)
        event_id = headers.get(EVENT_ID_HEADER, "")
        verdict = "duplicate" if event_id in self.events else "accepted"
        self.events.setdefault(event_id, json.loads(body))
        self.requests.append(Received(headers, body, verdict))
        if self.delay:
            time.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 204
        return status, verdict

    @contextlib.contextmanager
    def running(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, text = receiver.handle(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that gave up on a slow answer
                    self.wfile.write(text.encode())

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def down_url() -> str:
    """Returns a loopback URL nobody listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/hooks/savedmodel"


@dataclass
class SmtpServer:
    """aiosmtpd's SMTP server on loopback (no TLS, no login), keeping the messages it accepts."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[dict] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's name for the hook
        self.envelopes.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos)})
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def connection(self, from_email: str = "airflow@example.com") -> str:
        """Returns an Airflow connection (JSON) to this server, as an AIRFLOW_CONN_* value."""
        extra = {"disable_tls": True, "disable_ssl": True, "from_email": from_email, "timeout": 30}
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra})

    def wait_for(self, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        """Returns the messages once there are `count`; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"no {count} messages in {timeout} s"
            time.sleep(0.05)
        return self.messages

    @contextlib.contextmanager
    def running(self) -> Iterator[SmtpServer]:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        controller = Controller(self, hostname="127.0.0.1", port=self.port)
        controller.start()
        try:
            yield self
        finally:
            controller.stop()


def body_text(message: EmailMessage) -> str:
    """Returns the HTML body of an email the notifier sent."""
    part = message.get_body(preferencelist=("html", "plain"))
    return part.get_content() if part is not None else ""
