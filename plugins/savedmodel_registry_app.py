"""The Models pages: a FastAPI app on Airflow's API server, behind Airflow's own login and auth manager.

Mounted at `/registry` by plugins/savedmodel_plugin.py (which imports this module on the
first request, so the plugin stays cheap for every other Airflow process). Listed in
plugins/.airflowignore: the plugins manager must not import it on its own.

Every page and JSON endpoint needs a user the auth manager authenticated (the UI's `_token`
cookie or a `Bearer` token, exactly as Airflow's REST API reads them) who may read the
pipeline's DAG; requesting a label move needs the permission to trigger that DAG and the
promote DAG. A request triggers `savedmodel_promote` as the requesting user; the DAG waits for
an approval where the pipeline asks for one. A request identical to one that waits for an approval
is answered with that request's run (`merges_into`): its own run merges into it, moving nothing.
A model's page and JSON list the requests that wait (`pending`), each with its Required action.

    GET  /                                   models             GET /api/models
    GET  /models/<model>?page=N              one model          GET /api/models/<model>?page=N&per_page=M
    GET  /models/<model>/versions/<v>        one version        GET /api/models/<model>/versions/<v>
    POST /models/<model>/versions/<v>/labels (form: label, reason)
    POST /api/models/<model>/versions/<v>/labels (JSON: {"label", "reason"})
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal
from urllib.parse import urlsplit

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import FastAPI, Form, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from include.config import load_all_pipelines
from include.registry.approvals import identical_pending, needs_approval
from include.registry.page.data import (
    PER_PAGE,
    ModelNotFound,
    ModelRef,
    VersionNotFound,
    find_model,
    model_page,
    model_refs,
    models_overview,
    version_page,
)
from include.registry.page.html import (
    render_error,
    render_model,
    render_models,
    render_requested,
    render_version,
)
from include.registry.store import LABELS, has_version_dir, read_head, read_version_entry
from include.text import control_character_problem
from plugins import savedmodel_storage  # noqa: F401 - Airflow reads the buckets' connections

log = logging.getLogger(__name__)

URL_PREFIX = "/registry"
PROMOTE_DAG_ID = "savedmodel_promote"
API_PREFIX = "/api/"
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
    'stroke-width="2"><path d="M12 2 3 7l9 5 9-5-9-5z"/><path d="m3 12 9 5 9-5"/>'
    '<path d="m3 17 9 5 9-5"/></svg>'
)

app = FastAPI(title="SavedModel registry", docs_url=None, redoc_url=None, openapi_url=None)


class LabelMoveRequest(BaseModel):
    """A request to point a label at a version (JSON body of the API endpoint)."""

    label: Literal["stable", "canary"]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


# --- pages --------------------------------------------------------------------------------------


@app.get("/", response_class=HTMLResponse)
def models_html(request: Request, user: GetUserDep) -> HTMLResponse:
    """Returns the Models page: every model whose pipeline the user may read."""
    rows = models_overview(readable_models(request, user))
    return HTMLResponse(render_models(rows, **_page_context(request, user)))


@app.get("/models/{model}", response_class=HTMLResponse)
def model_html(
    request: Request, user: GetUserDep, model: str, page: Annotated[int, Query(ge=1)] = 1
) -> HTMLResponse:
    """Returns a model's page: chart, versions (paginated, newest first), label history."""
    ref = readable_model(request, user, model)
    return HTMLResponse(render_model(model_page(ref, page), **_page_context(request, user)))


@app.get("/models/{model}/versions/{version}", response_class=HTMLResponse)
def version_html(request: Request, user: GetUserDep, model: str, version: int) -> HTMLResponse:
    """Returns a version's page: lineage, signatures, digest, models.config entry, label-move forms."""
    ref = readable_model(request, user, model)
    data = _version_or_404(ref, version)
    may_request = may_request_moves(request, user, ref)
    return HTMLResponse(render_version(data, may_request=may_request, **_page_context(request, user)))


@app.post("/models/{model}/versions/{version}/labels", response_class=HTMLResponse)
def request_move_html(
    request: Request,
    user: GetUserDep,
    model: str,
    version: int,
    label: Annotated[str, Form()],
    reason: Annotated[str, Form()],
) -> HTMLResponse:
    """Triggers the promote DAG for a label move asked for in a version's form; returns what it started."""
    ref = movable_model(request, user, model)
    started = request_label_move(ref, version, label, reason, user)
    return HTMLResponse(render_requested(started, **_page_context(request, user)), status.HTTP_202_ACCEPTED)


@app.get("/icon.svg", include_in_schema=False)
def icon() -> Response:
    """Returns the navigation icon (public: it says nothing about any model)."""
    return Response(ICON, media_type="image/svg+xml")


# --- JSON ---------------------------------------------------------------------------------------


@app.get("/api/models")
def models_json(request: Request, user: GetUserDep) -> dict:
    """Returns every model whose pipeline the user may read."""
    return {"models": models_overview(readable_models(request, user))}


@app.get("/api/models/{model}")
def model_json(
    request: Request,
    user: GetUserDep,
    model: str,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = PER_PAGE,
) -> dict:
    """Returns one page of a model's versions, its labels and its label history."""
    data = model_page(readable_model(request, user, model), page, per_page)
    data.pop("series")
    return data


@app.get("/api/models/{model}/versions/{version}")
def version_json(request: Request, user: GetUserDep, model: str, version: int) -> dict:
    """Returns a version's entry, labels and models.config entry."""
    return _version_or_404(readable_model(request, user, model), version)


@app.post("/api/models/{model}/versions/{version}/labels", status_code=status.HTTP_202_ACCEPTED)
def request_move_json(
    request: Request, user: GetUserDep, model: str, version: int, body: LabelMoveRequest
) -> dict:
    """Triggers the promote DAG for a label move; returns the run it started."""
    return request_label_move(movable_model(request, user, model), version, body.label, body.reason, user)


# --- access -------------------------------------------------------------------------------------


def readable_models(request: Request, user) -> list[ModelRef]:
    """Returns the models of every valid pipeline whose DAG the user may read."""
    return [ref for ref in _refs() if is_authorized(request, user, ref.dag_id, "GET")]


def readable_model(request: Request, user, name: str) -> ModelRef:
    """Returns a model the user may read; 404 if no pipeline publishes it, 403 if not allowed."""
    try:
        ref = find_model(_refs(), name)
    except ModelNotFound as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from None
    requires_access_dag("GET", param_dag_id=ref.dag_id)(request, user)
    return ref


def movable_model(request: Request, user, name: str) -> ModelRef:
    """Returns a model whose labels the user may ask to move (may trigger its DAG and the promote DAG)."""
    _check_same_origin(request)
    ref = readable_model(request, user, name)
    for dag_id in (ref.dag_id, PROMOTE_DAG_ID):
        if not is_authorized(request, user, dag_id, "POST", DagAccessEntity.RUN):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{user.get_name()} may read {ref.name} but not trigger {dag_id}: "
                "requesting a label move needs both",
            )
    return ref


def may_request_moves(request: Request, user, ref: ModelRef) -> bool:
    """Returns whether the user may trigger the model's DAG and the promote DAG."""
    return all(
        is_authorized(request, user, dag_id, "POST", DagAccessEntity.RUN)
        for dag_id in (ref.dag_id, PROMOTE_DAG_ID)
    )


def is_authorized(request: Request, user, dag_id: str, method, entity: DagAccessEntity | None = None) -> bool:
    """Returns whether Airflow's auth manager lets `user` do `method` on a DAG (its own check, reused)."""
    try:
        requires_access_dag(method, entity, param_dag_id=dag_id)(request, user)
    except HTTPException as err:
        if err.status_code == status.HTTP_403_FORBIDDEN:
            return False
        raise
    return True


def _check_same_origin(request: Request) -> None:
    """Refuses a browser request sent from another site (the cookie is SameSite=Lax: belt and braces)."""
    origin = request.headers.get("origin")
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}  # behind a proxy too
    if origin and urlsplit(origin).netloc not in hosts:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cross-site request from {origin} refused")


# --- the action ---------------------------------------------------------------------------------


def request_label_move(ref: ModelRef, version: int, label: str, reason: str, user) -> dict:
    """Triggers the promote DAG as `user` for `label` -> `version`; returns the request and its run."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound
    from airflow.models.dag import DagModel
    from airflow.utils.types import DagRunTriggeredByType

    reason = reason.strip()
    if label not in LABELS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"label: expected one of {list(LABELS)}, got {label!r}"
        )
    if not 1 <= len(reason) <= 500:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "reason: expected 1 to 500 characters")
    if problem := control_character_problem("reason", reason):  # refused before anything is triggered
        raise HTTPException(status.HTTP_400_BAD_REQUEST, problem)
    entry = read_version_entry(ref.model_dir, version) or {}
    if entry.get("status") != "published":
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"version {version} is not a published version of {ref.name}"
        )
    if not has_version_dir(ref.model_dir, version):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"version {version} of {ref.name} is missing: its dir under {ref.model_dir} is gone",
        )
    conf = {"pipeline": ref.pipeline, "version": version, "label": label, "reason": reason}
    waits = needs_approval(ref.promotion_approval, label)
    # Said before the run decides it (under the registry's lock, as it is routed): it merges into
    # this one unless that one is decided first.
    pending = identical_pending(read_head(ref.model_dir), label, version) if waits else None
    try:
        run = trigger_dag(
            PROMOTE_DAG_ID,
            conf=conf,
            triggered_by=DagRunTriggeredByType.UI,
            triggering_user_name=user.get_name(),
        )
    except DagNotFound:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{PROMOTE_DAG_ID} is not known to Airflow yet"
        ) from None
    dag = DagModel.get_current(PROMOTE_DAG_ID)
    log.info("%s requested %s -> %s of %s: run %s", user.get_name(), label, version, ref.name, run.run_id)
    return {
        **conf,
        "model": ref.name,
        "requested_by": user.get_name(),
        "dag_id": PROMOTE_DAG_ID,
        "run_id": run.run_id,
        "needs_approval": waits,
        "merges_into": pending and {k: pending.get(k) for k in ("run_id", "requested_by", "requested_at")},
        "paused": bool(dag and dag.is_paused),
    }


# --- plumbing -----------------------------------------------------------------------------------


def _refs() -> list[ModelRef]:
    """Returns the models of the valid pipelines (the YAMLs are re-read only when they change)."""
    configs, _ = load_all_pipelines()
    return model_refs(configs)


def _version_or_404(ref: ModelRef, version: int) -> dict:
    """Returns a version's page data; 404 if the model has no such version."""
    try:
        return version_page(ref, version)
    except VersionNotFound as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from None


def _roots(request: Request) -> dict:
    """Returns the URL roots of the pages: this app's mount point and the Airflow UI's root."""
    base = request.scope.get("root_path", "").rstrip("/")
    ui = base[: -len(URL_PREFIX)] if base.endswith(URL_PREFIX) else ""
    return {"base": base, "ui": ui}


def _page_context(request: Request, user) -> dict:
    """Returns what every page template needs: the URL roots and the user's name."""
    return {**_roots(request), "user": user.get_name()}


def _is_api(request: Request) -> bool:
    """Returns whether a request is for a JSON endpoint (errors answer in JSON there)."""
    return request.url.path.startswith(_roots(request)["base"] + API_PREFIX)


@app.exception_handler(HTTPException)
def _http_error(request: Request, err: HTTPException) -> Response:
    """Returns JSON for the API; a redirect to Airflow's login for pages of anonymous users; else a page."""
    if _is_api(request):
        return JSONResponse({"detail": err.detail}, err.status_code, headers=err.headers)
    if err.status_code == status.HTTP_401_UNAUTHORIZED and request.method == "GET":
        next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            get_auth_manager().get_url_login(next_url=next_url), status.HTTP_303_SEE_OTHER
        )
    page = render_error(err.status_code, str(err.detail), **_roots(request), user=None)
    return HTMLResponse(page, err.status_code)


@app.exception_handler(RequestValidationError)
def _invalid_request(request: Request, err: RequestValidationError) -> Response:
    """Returns 400 with what was wrong (JSON for the API, a page otherwise)."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
    if _is_api(request):
        return JSONResponse({"detail": problems}, status.HTTP_400_BAD_REQUEST)
    return HTMLResponse(
        render_error(400, problems, **_roots(request), user=None), status.HTTP_400_BAD_REQUEST
    )
