"""Delivery with bounded retries: a receiver that is down or slow never fails or holds up the pipeline.

`deliver` makes at most `attempts` tries, each cut off after `timeout` seconds whatever the
receiver does (the try runs in a daemon thread that is abandoned at its deadline), with a
backoff between tries that starts at `backoff` seconds and doubles. So a delivery ends within
`Policy.worst_case()` seconds: 3 tries of 5 s with 0.5 s and 1 s between them, 16.5 s, by default.
A refusal that another try cannot change (HTTP 4xx: a wrong secret, a wrong URL) ends it at once.
Every try is handed to `record` (include/notify/record.py writes it down) and logged; nothing
here raises.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from include.errors import DeliveryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """How hard a delivery tries: tries, seconds each may take, first wait between tries (doubling)."""

    attempts: int = 3
    timeout: float = 5.0
    backoff: float = 0.5

    def worst_case(self) -> float:
        """Returns the most seconds a delivery can take: every try timing out, every backoff waited."""
        return self.attempts * self.timeout + sum(self.backoff * 2**i for i in range(self.attempts - 1))


def deliver(
    send: Callable[[float], str],
    *,
    event: dict,
    channel: str,
    target: str,
    policy: Policy,
    record: Callable[[dict], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Returns whether `send(timeout)` delivered the event within the policy's tries; never raises.

    `send` returns the receiver's answer in a few words (`HTTP 204`) or raises: DeliveryError
    (permanent or not) or any other error. Each try is passed to `record` as one dict:
    event_id, event, channel, target, attempt, attempts, outcome (delivered, failed, timed_out),
    answer or error, seconds, at.
    """
    for attempt in range(1, policy.attempts + 1):
        started, at = time.monotonic(), dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        outcome, answer, error, permanent = "delivered", None, None, False
        try:
            answer = _within(send, policy.timeout)
        except TimeoutError:
            outcome, error = "timed_out", f"no answer within {policy.timeout:g} s"
        except DeliveryError as err:
            outcome, error, permanent = "failed", str(err), err.permanent
        except Exception as err:  # a receiver's failure is never the pipeline's
            outcome, error = "failed", f"{type(err).__name__}: {err}"
        _record(
            record,
            {
                "event_id": event.get("event_id"),
                "event": event.get("event"),
                "channel": channel,
                "target": target,
                "attempt": attempt,
                "attempts": policy.attempts,
                "outcome": outcome,
                "answer": answer,
                "error": error,
                "seconds": round(time.monotonic() - started, 3),
                "at": at,
            },
        )
        if outcome == "delivered":
            log.info("notification %s %s delivered to %s %s (try %s)", event.get("event"),
                     event.get("event_id"), channel, target, attempt)  # fmt: skip
            return True
        last = attempt == policy.attempts or permanent
        log.warning("notification %s to %s %s, try %s of %s: %s%s", event.get("event"), channel, target,
                    attempt, policy.attempts, error, " (giving up)" if last else "")  # fmt: skip
        if last:
            return False
        sleep(policy.backoff * 2 ** (attempt - 1))
    return False


def _within(send: Callable[[float], str], timeout: float) -> str:
    """Returns what `send(timeout)` returns, raises what it raises; TimeoutError past `timeout` seconds.

    The call runs in a daemon thread: at the deadline it is left to finish (or not) on its own,
    and never keeps the process alive.
    """
    result: dict = {}

    def run() -> None:
        try:
            result["answer"] = send(timeout)
        except BaseException as err:  # handed to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, name="notification-delivery", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return str(result.get("answer") or "")


def _record(record: Callable[[dict], None] | None, attempt: dict) -> None:
    """Hands one try to `record`; a record that cannot be written is logged, never raised."""
    if record is None:
        return
    try:
        record(attempt)
    except Exception as err:
        log.warning("could not record notification attempt %s: %s", attempt, err)
