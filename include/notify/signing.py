"""Webhook signatures: HMAC-SHA256 of `<timestamp>.<body>` with a shared secret, like Stripe's.

A webhook request carries

    X-Savedmodel-Signature: t=1793318400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
    X-Savedmodel-Event-Id: 0b0f2a0e-...   (the event's id: drop a second delivery of the same one)

`v1` is the hex HMAC-SHA256, keyed with the secret (the password of the webhook's Airflow
connection), of the timestamp, a dot and the raw body bytes. A receiver recomputes it over the
bytes it received, compares in constant time, and refuses a timestamp outside its window
(`TOLERANCE_SECONDS`): a captured request cannot be replayed later, and a changed body or
timestamp no longer matches.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from include.errors import SignatureError

SIGNATURE_HEADER = "X-Savedmodel-Signature"
EVENT_ID_HEADER = "X-Savedmodel-Event-Id"
EVENT_HEADER = "X-Savedmodel-Event"
#: How far a signature's timestamp may be from the receiver's clock.
TOLERANCE_SECONDS = 300
SCHEME = "v1"


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """Returns the hex HMAC-SHA256 of `<timestamp>.<body>` keyed with `secret`."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """Returns the value of the signature header: `t=<unix seconds>,v1=<hex HMAC>`."""
    stamp = int(time.time() if timestamp is None else timestamp)
    return f"t={stamp},{SCHEME}={signature(body, secret, stamp)}"


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Returns the signed timestamp when `header` signs `body` with `secret` within `tolerance` seconds.

    Raises SignatureError saying what is wrong: no header, no timestamp or signature in it, a
    timestamp too old or in the future, a signature that does not match.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    stamps, signatures = parts.get("t", []), parts.get(SCHEME, [])
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit():
        raise SignatureError(f"expected one timestamp t=<unix seconds> in the header, got {header[:120]!r}")
    if not signatures:
        raise SignatureError(f"expected a {SCHEME}=<hex> signature in the header, got {header[:120]!r}")
    stamp = int(stamps[0])
    skew = (time.time() if now is None else now) - stamp
    if abs(skew) > tolerance:
        raise SignatureError(f"timestamp {stamp} is {skew:+.0f} s from now, outside the {tolerance} s window")
    expected = signature(body, secret, stamp)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise SignatureError("the signature does not match the body, timestamp and secret")
    return stamp
