"""Approvals of label moves: which moves wait for a person, and what the registry records of them.

A pipeline whose YAML says `serving.promotion_approval: required` moves `stable` only after a
person approves it (an ApprovalOperator in the promote DAG); `canary` never waits. Every decision
is a history event of the model's registry, beside the label moves:

    {"event": "approval", "label": "stable", "version": 20261012000000, "outcome": "approved",
     "requested_by": "alice", "by": "bob", "reason": "...", "at": "..."}

`outcome` is approved, rejected or timed_out (then `by` is "timeout").
"""

from __future__ import annotations

import os

from include.durable import locked
from include.registry.store import manifest_update
from include.storage.paths import as_path

#: The options of Airflow's ApprovalOperator (airflow.providers.standard.operators.hitl).
APPROVE = "Approve"
REJECT = "Reject"
OUTCOMES = ("approved", "rejected", "timed_out")


def needs_approval(promotion_approval: str, label: str) -> bool:
    """Returns whether moving `label` waits for a person, under a pipeline's `serving.promotion_approval`."""
    return label == "stable" and promotion_approval == "required"


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
) -> None:
    """Appends one approval decision to the model's history (under the model dir's lock)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome: expected one of {list(OUTCOMES)}, got {outcome!r}")
    event = {
        "event": "approval",
        "label": label,
        "version": int(version),
        "outcome": outcome,
        "requested_by": requested_by,
    }
    model_dir = as_path(model_dir)
    with locked(model_dir), manifest_update(model_dir) as update:
        update.record_event(event, by=approver or "timeout", reason=reason)
