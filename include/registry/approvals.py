"""Approvals of label moves: which moves wait for a person, and what the registry records of them.

A pipeline whose YAML says `serving.promotion_approval: required` moves `stable` only after a
person approves it (an ApprovalOperator in the promote DAG); `canary` never waits. Every decision
is a history event of the model's registry, beside the label moves:

    {"event": "approval", "label": "stable", "version": 20261012000000, "outcome": "approved",
     "requested_by": "alice", "by": "bob", "reason": "...", "at": "..."}

`outcome` is approved, rejected or timed_out (then `by` is "timeout"), or a refusal: an Approve
by the requester (self_approval_refused) or by someone the pipeline's `serving.approvers` does not
name (not_an_approver) counts as not approved, and a move whose premise changed while it waited
(`stable` moved meanwhile) is refused by `move_label` (premise_changed, with `stable_when_requested`
and `stable_now`).

Four eyes: the requester never approves their own request, admins included. The pipeline's
approvers (users and/or roles) minus the requester become the approval's `assigned_users`, so
Airflow's API refuses anyone else (403); `decision_outcome` checks the same again where the
answer is processed, which also covers auth managers that let every user answer (the simple auth
manager's all-admins mode) and pipelines that name no approvers.

Pending requests: a move that waits for a person is recorded in the model's head (`pending`:
run id, label, version, requester, when it was requested, when it expires) and in the history (a
`request` event), by the promote run's `route_request`; its decision (`record_approval` with the
run id) closes it. A second request for the same label and version while one is pending opens
no second approval: it is recorded as merged into the pending one (`merged`, and a `request`
event with outcome merged) and its run ends without moving anything. At most `max_pending()`
requests of a model wait at once (TooManyPending beyond): only one of them can ever move the
label, since approving one changes the premise of the others, and the bound is what keeps the
promote DAG's active runs free for moves that wait for nobody (dags/savedmodel_promote.py).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping

from include.durable import locked
from include.errors import RegistryError
from include.registry.store import manifest_update
from include.storage.paths import as_path

#: The most requests of one model that wait for an approval at once (override:
#: $SAVEDMODEL_MAX_PENDING_REQUESTS, read where the promote DAG is parsed and where it runs).
MAX_PENDING = 3

#: The options of Airflow's ApprovalOperator (airflow.providers.standard.operators.hitl).
APPROVE = "Approve"
REJECT = "Reject"
OUTCOMES = (
    "approved", "rejected", "timed_out", "self_approval_refused", "not_an_approver", "premise_changed",
)  # fmt: skip


class ApproversError(RegistryError):
    """Nobody but the requester may approve a move (the pipeline's approvers name only them, or no one)."""


class TooManyPending(RegistryError):
    """A model has as many requests waiting for an approval as it may have: decide one first."""


def max_pending() -> int:
    """Returns how many requests of one model may wait for an approval at once (at least 1)."""
    return max(1, int(os.environ.get("SAVEDMODEL_MAX_PENDING_REQUESTS") or MAX_PENDING))


def pending_requests(head: dict, now: dt.datetime | None = None) -> list[dict]:
    """Returns the requests of a model's head that wait for an approval and have not expired, oldest first."""
    now = now or dt.datetime.now(dt.UTC)
    return [
        p for p in head.get("pending") or [] if isinstance(p, dict) and parse_time(p.get("expires_at")) > now
    ]


def identical_pending(head: dict, label: str, version: int) -> dict | None:
    """Returns the pending request that a request for `label` -> `version` would merge into, if any."""
    found = [p for p in pending_requests(head) if (p.get("label"), p.get("version")) == (label, int(version))]
    return found[0] if found else None


def open_request(model_dir: str | os.PathLike[str], request: Mapping, *, limit: int) -> dict | None:
    """Records a request that waits for an approval; returns the pending request it merged into, if any.

    `request`: run_id, label, version, requested_by, requested_at, expires_at (ISO times), reason.
    An identical pending request (same label and version) absorbs it; a retry of a run already
    recorded changes nothing. Raises TooManyPending when `limit` other requests wait already.
    """
    model_dir = as_path(model_dir)
    with locked(model_dir), manifest_update(model_dir) as update:
        live = pending_requests(update.head)
        update.pending[:] = live  # expired ones go (their runs have timed out)
        mine = request["run_id"]
        if any(p.get("run_id") == mine for p in live):
            return None
        for pending in live:
            if (pending.get("label"), pending.get("version")) != (request["label"], int(request["version"])):
                continue
            merged = pending.setdefault("merged", [])
            if all(m.get("run_id") != mine for m in merged):
                merged.append({k: request[k] for k in ("run_id", "requested_by", "requested_at")})
                update.record_event(
                    {**_request_event(request), "outcome": "merged", "merged_into": pending["run_id"]},
                    by=request["requested_by"],
                    reason=request["reason"],
                )
            return pending
        if len(live) >= limit:
            waiting = ", ".join(f"{p['label']} -> {p['version']} (run {p['run_id']})" for p in live)
            raise TooManyPending(
                f"{len(live)} requests of {update.model} wait for an approval already ({waiting}), "
                f"the most a model may have: decide one of them, then ask again"
            )
        update.pending.append(
            {**_request_event(request), "reason": request["reason"], "expires_at": request["expires_at"]}
        )
        update.record_event(
            {**_request_event(request), "outcome": "pending"},
            by=request["requested_by"],
            reason=request["reason"],
        )
    return None


def _request_event(request: Mapping) -> dict:
    return {
        "event": "request",
        "run_id": request["run_id"],
        "label": request["label"],
        "version": int(request["version"]),
        "requested_by": request["requested_by"],
        "requested_at": request["requested_at"],
    }


def parse_time(value: object) -> dt.datetime:
    """Returns an ISO time as an aware datetime (UTC if it names no zone); the earliest one if unreadable."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def needs_approval(promotion_approval: str, label: str) -> bool:
    """Returns whether moving `label` waits for a person, under a pipeline's `serving.promotion_approval`."""
    return label == "stable" and promotion_approval == "required"


def assigned_approvers(
    users: Iterable[str],
    roles: Iterable[str],
    users_by_role: Mapping[str, Iterable[str]],
    *,
    requester: str,
) -> list[str]:
    """Returns who may approve: the named users and the holders of the named roles, minus the requester."""
    wanted_roles = {role.lower() for role in roles}
    holders = [
        user for role, names in users_by_role.items() if role.lower() in wanted_roles for user in names
    ]
    approvers = list(dict.fromkeys([*users, *holders]))
    return [user for user in approvers if user != requester]


def decision_outcome(
    result: dict | None, *, requester: str, approvers: Iterable[str] | None
) -> tuple[str, str | None]:
    """Returns (outcome, responder) of an answer: an Approve by the requester or a non-approver is refused.

    `approvers` None means the pipeline names none (anyone Airflow lets answer, but the requester).
    """
    outcome, responder = approval_outcome(result)
    if outcome == "approved":
        if responder == requester:
            return "self_approval_refused", responder
        if approvers is not None and responder not in set(approvers):
            return "not_an_approver", responder
    return outcome, responder


def approval_outcome(result: dict | None) -> tuple[str, str | None]:
    """Returns (outcome, approver) of an ApprovalOperator's result; a timeout has no approver."""
    result = result or {}
    user = result.get("responded_by_user") or {}
    approver = user.get("name") or user.get("id")
    if list(result.get("chosen_options") or []) == [APPROVE]:
        return "approved", approver
    return ("rejected", approver) if approver else ("timed_out", None)


def record_approval(
    model_dir: str | os.PathLike[str],
    label: str,
    version: int,
    *,
    outcome: str,
    approver: str | None,
    requested_by: str,
    reason: str,
    run_id: str | None = None,
    **details,
) -> None:
    """Appends one approval decision (and its `details`) to the model's history, under the model's lock.

    `run_id`: the promote run of the request; its pending request, if any, is closed by the decision.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome: expected one of {list(OUTCOMES)}, got {outcome!r}")
    event = {
        "event": "approval",
        "label": label,
        "version": int(version),
        "outcome": outcome,
        "requested_by": requested_by,
        **({"run_id": run_id} if run_id else {}),
        **details,
    }
    model_dir = as_path(model_dir)
    with locked(model_dir), manifest_update(model_dir) as update:
        if run_id and any(p.get("run_id") == run_id for p in update.head.get("pending") or []):
            update.pending[:] = [p for p in update.pending if p.get("run_id") != run_id]
        update.record_event(event, by=approver or "timeout", reason=reason)
