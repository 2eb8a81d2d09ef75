"""Label moves are authorized by the pipeline they belong to, on every route into the promote DAG.

One promote DAG moves the labels of every pipeline, so Airflow's own check of a trigger ("may this
user trigger savedmodel_promote?") says nothing about which model's labels move. The Models page
checks both DAGs; a REST call (or the UI's trigger form, which calls the same endpoint) would not.
`PromoteRightsMiddleware`, a root middleware of the API server (plugins/savedmodel_plugin.py),
closes that route: a POST that creates a promote run is let through only if Airflow's auth manager
lets the caller trigger the DAG of the pipeline named in its `conf` (the promote DAG's default
pipeline when it names none); otherwise it answers 403 naming the pipeline, and no run exists.
With an auth manager that has rights per DAG (FAB, Keycloak), a user who may not trigger a
pipeline therefore cannot move its labels by any route; the simple auth manager has rights per
role only, where both checks agree anyway.

Everything else passes through untouched; an unauthenticated caller is left to the endpoint's own
401. Imported by the API server only, on its first request (plugins/.airflowignore).
"""

from __future__ import annotations

import json
import logging
import re

log = logging.getLogger(__name__)

#: The promote DAG (dags/savedmodel_promote.py).
PROMOTE_DAG_ID = "savedmodel_promote"
#: Airflow's endpoint that creates a DAG run, for the promote DAG (under any root path).
_TRIGGER = re.compile(rf"(?:^|/)api/v2/dags/{PROMOTE_DAG_ID}/dagRuns/?$")
#: The most bytes of a trigger request read to find its pipeline; bigger bodies are refused.
MAX_BODY = 1 << 20


class PromoteRightsMiddleware:
    """An ASGI middleware: a promote run is created only by someone who may trigger its pipeline."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        """Checks POSTs that create promote runs; passes every other request on as it is."""
        if scope["type"] != "http" or scope["method"] != "POST" or not _TRIGGER.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        refusal = await refusal_of(scope, body) if complete else f"a request body over {MAX_BODY} bytes"
        if refusal is None:
            await self.app(scope, _replay(body, receive), send)
            return
        log.warning("refused a %s run: %s", PROMOTE_DAG_ID, refusal)
        await _respond(send, 403, {"detail": refusal})


async def refusal_of(scope, body: bytes) -> str | None:
    """Returns why the caller may not create this promote run, or None if they may (or Airflow decides)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from fastapi import HTTPException

    from include.config import load_all_pipelines

    token = _token(scope)
    if not token:
        return None  # the endpoint answers 401 itself
    try:
        user = await get_auth_manager().get_user_from_token(token)
    except Exception:  # expired or invalid: the endpoint refuses it with its own words
        return None
    try:
        conf = (json.loads(body or b"{}") or {}).get("conf") or {}
    except (ValueError, AttributeError):
        return None  # not JSON: the endpoint answers 422
    configs, _ = load_all_pipelines()
    name = conf.get("pipeline") if isinstance(conf, dict) else None
    if name is None and configs:
        name = configs[0].name  # the promote DAG's default param
    config = next((c for c in configs if c.name == name), None)
    if config is None:
        return None  # route_request refuses an unknown pipeline, naming the known ones
    try:
        allowed = get_auth_manager().is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=config.dag_id), user=user
        )
    except HTTPException:
        allowed = False
    if allowed:
        return None
    return (
        f"{user.get_name()} may not trigger {config.dag_id}, so may not move the labels of pipeline "
        f"{config.name}'s model {config.model.name} (a label move needs the right to trigger its pipeline)"
    )


def _token(scope) -> str | None:
    """Returns the caller's JWT: the Authorization bearer token, else the UI's `_token` cookie."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "_token" and value:
            return value
    return None


async def _read_body(receive) -> tuple[bytes, bool]:
    """Returns the request's body and whether it was read whole (at most MAX_BODY bytes)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True


def _replay(body: bytes, receive):
    """Returns a `receive` that hands the body read once to the app, then waits as the server would."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _respond(send, status: int, payload: dict) -> None:
    """Sends a JSON response."""
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
