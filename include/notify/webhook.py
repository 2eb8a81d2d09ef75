"""One signed POST of an event to a webhook (the tries and their deadline are delivery.py's)."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from include.errors import DeliveryError
from include.notify.signing import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header

USER_AGENT = "savedmodel-pipeline-notifications/1"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: a signed POST is sent to the configured URL only, never re-sent elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_event(url: str, body: bytes, *, secret: str, event: dict, timeout: float) -> str:
    """Returns the receiver's answer (`HTTP 204`) to one signed POST of `body`; raises DeliveryError.

    The signature is made now, so a retry carries a fresh timestamp over the same body and event
    id. 2xx is delivered; 408, 429 and 5xx may pass on another try; other answers (a wrong
    secret: 401, a wrong URL: 404, a redirect) are permanent.
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: str(event.get("event")),
        EVENT_ID_HEADER: str(event.get("event_id")),
        SIGNATURE_HEADER: signature_header(body, secret),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        permanent = err.code < 500 and err.code not in (408, 429)
        raise DeliveryError(f"HTTP {err.code} {err.reason}", permanent=permanent) from None
    except urllib.error.URLError as err:
        raise DeliveryError(f"cannot reach {shown_url(url)}: {err.reason}") from None


def shown_url(url: str) -> str:
    """Returns a URL fit for logs and the delivery record: without its query (it may carry a token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
