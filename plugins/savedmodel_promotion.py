"""The promote DAG's steps: route a request, wait for a person's approval, move the label.

    route_request ─┬──────────────────► move_label
                   └─► approve_stable ─┘

`route_request` checks the request (the version must be published) and branches: a `stable`
move of a pipeline with `serving.promotion_approval: required` goes through `approve_stable`,
an ApprovalOperator that waits under the UI's Required actions; anything else goes straight to
`move_label`. The approval records its decision in the model's history as it is made (approved,
rejected, or timed out); approve → `move_label` runs and records the move; reject or timeout →
the operator skips `move_label` and nothing else changes. TensorFlow is never imported here.
Notifications (plugins/savedmodel_notifiers.py): approval_waiting when `approve_stable` starts
waiting, label_moved after `move_label`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import TriggerRule, get_current_context, task

from plugins.savedmodel_errors import fail_fast_on_permanent_errors
from plugins.savedmodel_notifiers import approval_notifier, notify_label_moved

APPROVAL_TASK_ID = "approve_stable"
ROUTE_TASK_ID = "route_request"
MOVE_TASK_ID = "move_label"
#: How long a request waits for an answer; then it counts as refused ("timed_out").
APPROVAL_TIMEOUT = timedelta(days=3)

_SUBJECT = "Make version {{ params.version }} of {{ params.pipeline }} stable?"
_BODY = """\
{% set r = ti.xcom_pull(task_ids='route_request', key='request') or {} %}
**{{ dag_run.triggering_user_name or 'Someone' }}** asks to point `stable` of model
**{{ r.get('model', params.pipeline) }}** at version **{{ params.version }}**
(`stable` is {{ r.get('current_stable') or 'unset' }} now).

Reason: {{ params.reason }}

Held-out metrics of {{ params.version }}: {{ r.get('metrics') or 'none recorded' }}

[The version's page]({{ r.get('version_url', '') }}) · Approve moves the label and regenerates
models.config; Reject changes nothing. No answer within {{ timeout }} counts as a rejection.
"""


@task.branch(task_id=ROUTE_TASK_ID)
def route_request() -> str:
    """Checks the requested move and returns the next task: the approval, or the move itself."""
    from include.config import find_pipeline
    from include.errors import RegistryError
    from include.registry.approvals import needs_approval
    from include.registry.store import published_versions, read_head, read_manifest, read_version_entry
    from include.versions import model_dir

    context = get_current_context()
    params = context["params"]
    with fail_fast_on_permanent_errors():
        config = find_pipeline(params["pipeline"])
        directory = model_dir(config.storage.serving_root, config.model.name)
        entry = read_version_entry(directory, params["version"]) or {}
        if entry.get("status") != "published":
            published = published_versions(read_manifest(directory))
            raise RegistryError(
                f"version {params['version']} is not a published version of {config.model.name} "
                f"(published: {published})"
            )
    context["ti"].xcom_push(
        key="request",
        value={
            "model": config.model.name,
            "current_stable": read_head(directory)["labels"].get("stable"),
            "metrics": ", ".join(
                f"{k[5:]} {v:.4g}" for k, v in (entry.get("metrics") or {}).items() if k.startswith("eval_")
            ),
            "version_url": f"/registry/models/{config.model.name}/versions/{params['version']}",
        },
    )
    if needs_approval(config.serving.promotion_approval, params["label"]):
        return APPROVAL_TASK_ID
    return MOVE_TASK_ID


class LabelMoveApproval(ApprovalOperator):
    """An ApprovalOperator that records its decision in the model's registry history when it is made."""

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        """Records approved / rejected / timed out, then lets the operator go on (or skip the move)."""
        if "error" not in event:
            record_decision(context, event)
        return super().execute_complete(context=context, event=event)


def approve_stable() -> LabelMoveApproval:
    """Returns the approval step: Approve or Reject in the UI's Required actions; no answer = Reject."""
    return LabelMoveApproval(
        task_id=APPROVAL_TASK_ID,
        subject=_SUBJECT,
        body=_BODY.replace("{{ timeout }}", _describe(APPROVAL_TIMEOUT)),
        defaults="Reject",
        response_timeout=APPROVAL_TIMEOUT,
        # approval_waiting, to the pipeline's approvers with the link, as the request starts to wait
        notifiers=[approval_notifier()],
    )


def record_decision(context, event: dict) -> str:
    """Appends the answer (a person's, or the timeout's) to a move request to the history; returns it."""
    from include.config import find_pipeline
    from include.registry.approvals import approval_outcome, record_approval
    from include.versions import model_dir

    params = context["params"]
    outcome, approver = approval_outcome(event)
    with fail_fast_on_permanent_errors():
        config = find_pipeline(params["pipeline"])
        record_approval(
            model_dir(config.storage.serving_root, config.model.name),
            params["label"],
            params["version"],
            outcome=outcome,
            approver=approver,
            requested_by=requester(context["dag_run"]),
            reason=params["reason"],
        )
    return outcome


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
    from include.registry.policy import promote

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    with fail_fast_on_permanent_errors():
        config = find_pipeline(params["pipeline"])
        by = getattr(dag_run, "triggering_user_name", None) or dag_run.run_id
        manifest = promote(
            config.storage.serving_root,
            config.model.name,
            params["version"],
            params["label"],
            by=by,
            reason=params["reason"],
        )
    moved = {
        "label": params["label"],
        "previous": previous_holder(manifest, params["label"], params["version"]),
    }
    notify_label_moved(context, config, params["version"], [moved], by=by, reason=params["reason"])
    return {"model": config.model.name, "labels": manifest["labels"]}


def previous_holder(manifest: dict, label: str, version: int) -> int | None:
    """Returns the version `label` pointed at before its last move to `version` (None if unknown)."""
    for event in reversed(manifest.get("history", [])):
        if event.get("event") == "label" and event.get("label") == label and event.get("version") == version:
            return event.get("previous")
    return None
