"""The promote DAG's steps: route a request, wait for a person's approval, move the label.

    route_request ─┬──────────────────► move_label
                   └─► approve_stable ─┘

`route_request` checks the request (the version must be published) and branches: a `stable`
move of a pipeline with `serving.promotion_approval: required` goes through `approve_stable`,
an ApprovalOperator that waits under the UI's Required actions; anything else goes straight to
`move_label`. The approval records its decision in the model's history as it is made (approved,
rejected, or timed out); approve → `move_label` runs and records the move; reject or timeout →
the operator skips `move_label` and nothing else changes. TensorFlow is never imported here.

Four eyes: the pipeline's `serving.approvers` (users, and the users holding its roles; none named:
the simple auth manager's users who may answer) minus the requester become the approval's
`assigned_users`, so Airflow refuses anyone else; where the answer is processed an Approve by the
requester, or by someone not assigned, is recorded as refused and fails the step (nothing moves).
The dialog's body is built here, once, as the request is routed: the candidate's and the current
`stable`'s held-out metrics side by side, and what users typed (the reason, user names) quoted as
code so no Markdown in it renders. `move_label` refuses a move whose label moved since the request
was routed (premise_changed, recorded; nothing moves).

Requests never block each other. A request that waits is recorded as pending in the model's
registry (include/registry/approvals.py): an identical one (same label and version) merges into it
and its run ends at once, moving nothing; a model has at most `max_pending()` waiting, so the
promote DAG's `max_active_runs` (`max_active_runs()`: every approval that may wait, plus
MOVE_SLOTS) always leaves runs for moves that wait for nobody. Moves apply in request order (the
run's `run_after`): one overtaken by a move asked for later is refused (premise_changed), at
routing or at the move (include/registry/policy.py). A rejected or timed-out request fails
`approve_stable` (RequestDeclined: no retry, no run_failed notification), so its run is not green.
Notifications (plugins/savedmodel_notifiers.py): approval_waiting when `approve_stable` starts
waiting, label_moved after `move_label`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from plugins.savedmodel_errors import fail_fast_on_permanent_errors
from plugins.savedmodel_notifiers import approval_notifier, notify_label_moved

log = logging.getLogger(__name__)

APPROVAL_TASK_ID = "approve_stable"
ROUTE_TASK_ID = "route_request"
MOVE_TASK_ID = "move_label"
#: How long a request waits for an answer; then it counts as refused ("timed_out").
APPROVAL_TIMEOUT = timedelta(days=3)
#: How soon an approval whose answer Airflow lost asks again (see `approve_stable`).
APPROVAL_RETRY_DELAY = timedelta(seconds=5)

_SUBJECT = "Make version {{ params.version }} of {{ params.pipeline }} stable?"
# The body is Markdown built by `approval_body` when the request is routed (quoted there).
_BODY = "{{ (ti.xcom_pull(task_ids='route_request', key='request') or {}).get('body', '') }}"
#: Outcomes of an Approve that does not count: the step fails and nothing moves.
REFUSED = ("self_approval_refused", "not_an_approver")
#: Outcomes of a No (a person's, or the timeout's): the step fails, nothing moves, nobody is notified.
DECLINED = ("rejected", "timed_out")
#: Active runs of the promote DAG kept for requests that wait for nobody (canary moves, pipelines
#: without approval, every request while it is routed) beyond those approvals may hold;
#: $SAVEDMODEL_PROMOTE_MOVE_SLOTS overrides it where the DAG is parsed.
MOVE_SLOTS = 16


class RequestDeclined(AirflowFailException):
    """A move request was rejected or got no answer in time: recorded, nothing moved, no retry."""


def max_active_runs(configs) -> int:
    """Returns the promote DAG's max_active_runs: the most approvals that may wait, plus MOVE_SLOTS.

    Each pipeline whose `stable` moves wait for a person holds at most `max_pending()` waiting runs
    (an approval awaiting input holds no worker slot, but its run counts as active), so the rest of the
    runs are always there for moves that wait for nobody.
    """
    import os

    from include.registry.approvals import max_pending

    guarded = sum(1 for c in configs if c.serving.promotion_approval == "required")
    slots = max(1, int(os.environ.get("SAVEDMODEL_PROMOTE_MOVE_SLOTS") or MOVE_SLOTS))
    return guarded * max_pending() + slots


def requested_time(dag_run) -> str | None:
    """Returns when a promote run was asked for (its run_after, else when it was queued), ISO, or None."""
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "queued_at", None)
    return when.isoformat() if hasattr(when, "isoformat") else None


@task.branch(task_id=ROUTE_TASK_ID)
def route_request() -> str | None:
    """Checks the requested move and returns the next task: the approval, the move, or None (merged)."""
    from include.config import find_pipeline
    from include.errors import RegistryError, RunParamsError
    from include.registry.approvals import max_pending, needs_approval, open_request
    from include.registry.policy import PremiseChanged, request_premise
    from include.registry.store import (
        now_iso,
        published_versions,
        read_head,
        read_manifest,
        read_version_entry,
    )
    from include.text import control_character_problem
    from include.versions import model_dir

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    requested_at = requested_time(dag_run)
    with fail_fast_on_permanent_errors():
        if problem := control_character_problem("reason", params["reason"]):
            raise RunParamsError(problem)
        config = find_pipeline(params["pipeline"])
        directory = model_dir(config.storage.serving_root, config.model.name)
        entry = read_version_entry(directory, params["version"]) or {}
        if entry.get("status") != "published":
            published = published_versions(read_manifest(directory))
            raise RegistryError(
                f"version {params['version']} is not a published version of {config.model.name} "
                f"(published: {published})"
            )
        who = requester(dag_run)
        # Overtaken: a move asked for after this one landed first; applying this one would undo it.
        expected, now = request_premise(directory, params["label"], requested_at)
        if expected != now:
            changed = PremiseChanged(config.model.name, params["label"], expected, now)
            _record_premise_changed(directory, context, changed, by=ROUTE_TASK_ID)
            raise changed
        labels = read_head(directory)["labels"]
        stable = labels.get("stable")
        waits = needs_approval(config.serving.promotion_approval, params["label"])
        approvers = approvers_of(config.serving.approvers, requester=who) if waits else None
        merged_into = None
        if waits:
            request = {
                "run_id": dag_run.run_id,
                "label": params["label"],
                "version": params["version"],
                "requested_by": who,
                "requested_at": requested_at or now_iso(),
                "expires_at": (_utc_now() + APPROVAL_TIMEOUT).isoformat(),
                "reason": params["reason"],
            }
            merged_into = open_request(directory, request, limit=max_pending())
    if merged_into is not None:
        log.info(
            "an identical request waits for an approval (run %s, requested by %s): merged into it, "
            "nothing else to do",
            merged_into["run_id"],
            merged_into.get("requested_by"),
        )
        context["ti"].xcom_push(key="request", value={"model": config.model.name, "merged_into": merged_into})
        return None  # skips the approval and the move: the run ends having moved nothing
    stable_entry = (read_version_entry(directory, stable) or {}) if stable is not None else {}
    version_url = f"/registry/models/{config.model.name}/versions/{params['version']}"
    context["ti"].xcom_push(
        key="request",
        value={
            "model": config.model.name,
            "current_stable": stable,
            # What the approver is asked: the label points where it did when the request was routed.
            # A move that waits for nobody is checked by its request time instead (move_label).
            "premise": {params["label"]: labels.get(params["label"])} if waits else None,
            "requested_at": requested_at,
            "approvers": approvers,
            "metrics": held_out(entry),
            "version_url": version_url,
            "body": approval_body(
                requester=who,
                model=config.model.name,
                version=params["version"],
                reason=params["reason"],
                candidate=held_out(entry),
                stable=stable,
                stable_metrics=held_out(stable_entry),
                version_url=version_url,
            )
            if waits
            else "",
        },
    )
    return APPROVAL_TASK_ID if waits else MOVE_TASK_ID


def approvers_of(approvers, *, requester: str) -> list[str] | None:
    """Returns who may approve `requester`'s request (None: Airflow decides, the answer is checked after).

    Without `serving.approvers`, under the simple auth manager: every user whose role may answer
    required actions (user, op, admin). Raises ApproversError when that leaves only the requester.
    """
    from include.registry.approvals import ApproversError, assigned_approvers

    if approvers is None:
        if not _simple_auth_manager():
            return None
        users, roles, key = (), ANSWERING_ROLES, "the users who may answer required actions"
    else:
        users, roles = approvers.users, approvers.roles
        key = f"serving.approvers (users {list(users)}, roles {list(roles)})"
    allowed = assigned_approvers(users, roles, users_by_role() if roles else {}, requester=requester)
    if not allowed:
        raise ApproversError(
            f"nobody but the requester ({requester}) may approve this move: {key}; name another "
            f"approver under serving.approvers"
        )
    return allowed


#: The simple auth manager's roles allowed to answer a DAG's required actions.
ANSWERING_ROLES = ("user", "op", "admin")


def users_by_role() -> dict[str, list[str]]:
    """Returns the simple auth manager's users by role ([core] simple_auth_manager_users).

    Roles are resolved only with the simple auth manager; with another, name users instead.
    """
    from airflow.sdk.configuration import conf

    from include.registry.approvals import ApproversError

    if not _simple_auth_manager():
        raise ApproversError(
            f"serving.approvers.roles: roles are resolved from the simple auth manager's users, but "
            f"the auth manager is {_auth_manager() or 'unset'}; name the approvers under "
            f"serving.approvers.users"
        )
    roles: dict[str, list[str]] = {}
    for user in (conf.get("core", "simple_auth_manager_users", fallback="") or "").split(","):
        name, role, *_teams = [*user.strip().split(":"), ""]
        if name.strip() and role.strip():
            roles.setdefault(role.strip().lower(), []).append(name.strip())
    return roles


def _auth_manager() -> str:
    """Returns the configured auth manager's class path ([core] auth_manager)."""
    from airflow.sdk.configuration import conf

    return conf.get("core", "auth_manager", fallback="") or ""


def _simple_auth_manager() -> bool:
    """Returns whether the auth manager is Airflow's simple auth manager or builds on it (users and
    roles in the config)."""
    import importlib

    module, _, name = _auth_manager().rpartition(".")
    if name == "SimpleAuthManager":
        return True
    try:
        manager = getattr(importlib.import_module(module), name, None) if module else None
    except ImportError:
        return False
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    return isinstance(manager, type) and issubclass(manager, SimpleAuthManager)


def held_out(entry: dict) -> dict[str, float]:
    """Returns a version entry's held-out metrics by name (without the `eval_` prefix)."""
    return {k[5:]: v for k, v in (entry.get("metrics") or {}).items() if k.startswith("eval_")}


def approval_body(
    *,
    requester: str,
    model: str,
    version: int,
    reason: str,
    candidate: dict,
    stable: int | None,
    stable_metrics: dict,
    version_url: str,
    timeout: timedelta = APPROVAL_TIMEOUT,
) -> str:
    """Returns the approval dialog's Markdown: who asks, both versions' metrics side by side, the reason.

    What users typed (the requester's name, the reason) is quoted as code, so it shows as text.
    """
    from include.text import markdown_block, markdown_code

    now = f"version {stable}" if stable is not None else "unset"
    rows = [
        f"| {_cell(name)} | {_number(candidate.get(name))} | {_number(stable_metrics.get(name))} |"
        for name in dict.fromkeys([*candidate, *stable_metrics])
    ]
    table = "\n".join(
        [
            f"| held-out metric | version {version} (requested) | `stable`: {now} |",
            "|---|---:|---:|",
            *(rows or ["| none recorded | — | — |"]),
        ]
    )
    return (
        f"{markdown_code(requester)} asks to point `stable` of model {markdown_code(model)} at version "
        f"**{int(version)}** (`stable` is {now} as the request is made).\n\n"
        f"{table}\n\n"
        f"Reason, as the requester typed it:\n\n{markdown_block(reason)}\n\n"
        f"[The version's page]({version_url}) · Approve moves the label and regenerates models.config "
        f"(refused if `stable` moved meanwhile, and never by the requester); Reject changes nothing. "
        f"No answer within {_describe(timeout)} counts as a rejection.\n"
    )


def _cell(text: str) -> str:
    """Returns text as a code span fit for a Markdown table cell (a pipe would end the cell)."""
    from include.text import markdown_code

    return markdown_code(str(text)).replace("|", "\\|")


def _number(value) -> str:
    """Returns a metric for the dialog's table: 4 significant digits, or a dash when missing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return "—"


class LabelMoveApproval(ApprovalOperator):
    """An ApprovalOperator assigned to the pipeline's approvers, never the requester; records its decision."""

    def execute(self, context) -> Any:
        """Assigns the request to the approvers `route_request` found, then asks (Required actions)."""
        approvers = _routed(context).get("approvers")
        if approvers is not None:
            # Simple auth manager: a user's id is its name (other managers: name users by their id).
            self.assigned_users = [{"id": user, "name": user} for user in approvers]
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        """Records the answer; an Approve by the requester or a non-approver fails the step, nothing moves."""
        if "error" not in event:
            outcome = record_decision(context, event, approvers=_routed(context).get("approvers"))
            who = (event.get("responded_by_user") or {}).get("name")
            if outcome in REFUSED:
                raise AirflowFailException(
                    f"approval refused ({outcome}): {who} may not approve this request "
                    f"(requested by {requester(context['dag_run'])}); nothing moved, ask another approver"
                )
            if outcome == "rejected":
                raise RequestDeclined(f"rejected by {who}: nothing moved")
            if outcome == "timed_out":
                raise RequestDeclined(
                    f"no answer within {_describe(APPROVAL_TIMEOUT)} (timed out): nothing moved"
                )
        return super().execute_complete(context=context, event=event)


def approve_stable() -> LabelMoveApproval:
    """Returns the approval step: Approve or Reject in the UI's Required actions; no answer = Reject."""
    return LabelMoveApproval(
        task_id=APPROVAL_TASK_ID,
        subject=_SUBJECT,
        body=_BODY,
        defaults="Reject",
        response_timeout=APPROVAL_TIMEOUT,
        # approval_waiting, to the pipeline's approvers with the link, as the request starts to wait
        notifiers=[approval_notifier()],
        # Airflow 3.3 can lose an answer given within seconds of the approval starting to wait (the
        # scheduler handles the paused try's exit after the answer queued the task again, and marks
        # it up for retry): the retry asks again at once, instead of after the DAG's 5 minutes.
        retries=2,
        retry_delay=APPROVAL_RETRY_DELAY,
    )


def record_decision(context, event: dict, approvers: list[str] | None = None) -> str:
    """Appends the answer (a person's, or the timeout's) to a move request to the history; returns it.

    An Approve by the requester is self_approval_refused; by someone outside `approvers` (when the
    pipeline names approvers), not_an_approver.
    """
    from include.config import find_pipeline
    from include.registry.approvals import decision_outcome, record_approval
    from include.versions import model_dir

    params = context["params"]
    asked_by = requester(context["dag_run"])
    outcome, approver = decision_outcome(event, requester=asked_by, approvers=approvers)
    with fail_fast_on_permanent_errors():
        config = find_pipeline(params["pipeline"])
        record_approval(
            model_dir(config.storage.serving_root, config.model.name),
            params["label"],
            params["version"],
            outcome=outcome,
            approver=approver,
            requested_by=asked_by,
            reason=params["reason"],
            run_id=context["dag_run"].run_id,
        )
    return outcome


def _routed(context) -> dict:
    """Returns what `route_request` pushed about the request (empty when it pushed nothing)."""
    return context["ti"].xcom_pull(task_ids=ROUTE_TASK_ID, key="request") or {}


def requester(dag_run) -> str:
    """Returns who asked for a run: the user Airflow authenticated when it was triggered (else its id)."""
    return getattr(dag_run, "triggering_user_name", None) or dag_run.run_id


def _describe(delta: timedelta) -> str:
    """Returns a duration in words (days or hours)."""
    if delta.days and not delta.seconds:
        return f"{delta.days} day{'s' if delta.days != 1 else ''}"
    return f"{delta.total_seconds() / 3600:g} hours"


@task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
def move_label() -> dict:
    """Points a label (stable/canary) at a published, loadable version; records who and why.

    Runs after `route_request`, directly or through an approval that said yes (one that says no
    skips it: plugins/savedmodel_promotion.py).
    """
    from include.config import find_pipeline
    from include.registry.policy import PremiseChanged, promote
    from include.versions import model_dir

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    with fail_fast_on_permanent_errors():
        config = find_pipeline(params["pipeline"])
        by = requester(dag_run)
        try:
            manifest = promote(
                config.storage.serving_root,
                config.model.name,
                params["version"],
                params["label"],
                by=by,
                reason=params["reason"],
                premise=_routed(context).get("premise"),
                requested_at=requested_time(dag_run),
            )
        except PremiseChanged as changed:
            directory = model_dir(config.storage.serving_root, config.model.name)
            _record_premise_changed(directory, context, changed, by=MOVE_TASK_ID)
            raise
    moved = {
        "label": params["label"],
        "previous": previous_holder(manifest, params["label"], params["version"]),
    }
    notify_label_moved(context, config, params["version"], [moved], by=by, reason=params["reason"])
    return {"model": config.model.name, "labels": manifest["labels"]}


def _record_premise_changed(directory, context, changed, *, by: str) -> None:
    """Records a request refused because its label moved (premise_changed), by `by` (the refusing step)."""
    from include.registry.approvals import record_approval

    params, dag_run = context["params"], context["dag_run"]
    record_approval(
        directory,
        params["label"],
        params["version"],
        outcome="premise_changed",
        approver=by,
        requested_by=requester(dag_run),
        reason=params["reason"],
        run_id=getattr(dag_run, "run_id", None),
        **{f"{changed.label}_when_requested": changed.requested, f"{changed.label}_now": changed.now},
    )


def _utc_now() -> datetime:
    """Returns the current time, UTC."""
    return datetime.now(UTC)


def previous_holder(manifest: dict, label: str, version: int) -> int | None:
    """Returns the version `label` pointed at before its last move to `version` (None if unknown)."""
    for event in reversed(manifest.get("history", [])):
        if event.get("event") == "label" and event.get("label") == label and event.get("version") == version:
            return event.get("previous")
    return None
