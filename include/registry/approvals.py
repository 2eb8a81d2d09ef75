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
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from include.durable import locked
from include.errors import RegistryError
from include.registry.store import manifest_update
from include.storage.paths import as_path

#: The options of Airflow's ApprovalOperator (airflow.providers.standard.operators.hitl).
APPROVE = "Approve"
REJECT = "Reject"
OUTCOMES = (
    "approved", "rejected", "timed_out", "self_approval_refused", "not_an_approver", "premise_changed",
)  # fmt: skip


class ApproversError(RegistryError):
    """Nobody but the requester may approve a move (the pipeline's approvers name only them, or no one)."""


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
    **details,
) -> None:
    """Appends one approval decision (and its `details`) to the model's history, under the model's lock."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome: expected one of {list(OUTCOMES)}, got {outcome!r}")
    event = {
        "event": "approval",
        "label": label,
        "version": int(version),
        "outcome": outcome,
        "requested_by": requested_by,
        **details,
    }
    model_dir = as_path(model_dir)
    with locked(model_dir), manifest_update(model_dir) as update:
        update.record_event(event, by=approver or "timeout", reason=reason)
