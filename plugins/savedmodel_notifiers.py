"""Notifications through Airflow's notifier interface: email over SMTP and signed webhooks.

`PipelineNotifier` is what the DAGs hold. When called (a callback, an operator's `notifiers`, or
a task that moved a label), it finds the pipeline, builds the event from the Airflow context
(include/notify/events.py) and hands it to one notifier per receiver the pipeline's
`notifications:` name, all at once: `EmailNotifier` (the SMTP provider's SmtpHook) and
`WebhookNotifier` (a signed POST). Each makes a bounded number of tries with a hard deadline
and records every try in the model dir (include/notify/), so a receiver that is down or slow
holds the pipeline up for at most `Policy.worst_case()` seconds and never fails it.

Wired in:

- every task of a pipeline DAG, `on_failure_callback` (runs after the last try only): a run the
  data checks or the quality gate blocked sends `gate_blocked` with the failing rows, any other
  failure `run_failed` (a blocked run sends `run_failed` when `gate_blocked` is not subscribed);
- `publish_version` and the promote DAG's `move_label`: `label_moved`;
- the promote DAG's `approve_stable` (`notifiers=`): `approval_waiting` when it starts waiting,
  with the link to the task's Required actions page; its tasks' failures: `run_failed`, but for a
  request rejected or timed out (RequestDeclined: a person's No, or nobody's answer, is no fault
  to report; the history records it and the run is not green).

Imported while DAG files are parsed: nothing heavy at module level.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.sdk import BaseHook, BaseNotifier

from include.notify.delivery import Policy, deliver

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context

    from include.config import PipelineConfig

log = logging.getLogger(__name__)

#: The Airflow UI's root when `[api] base_url` is unset (Airflow's own default for its links).
DEFAULT_BASE_URL = "http://localhost:8080/"
#: Where the Models page is mounted on the API server (plugins/savedmodel_registry_app.py).
REGISTRY_PREFIX = "/registry"
#: Seconds a notifier waits past its receivers' worst case before it leaves them to finish alone.
GRACE_SECONDS = 1.0


class PipelineNotifier(BaseNotifier):
    """Sends one event of a pipeline to every receiver its `notifications:` configure; never raises.

    `pipeline`: the pipeline's config, or its name (None: the run's `pipeline` param, as in the
    promote DAG), found when called.
    `event`: run_failed, gate_blocked, approval_waiting or label_moved; None = a task's failure
    (gate_blocked when a gate blocked it, else run_failed). `version` and `details` give what the
    context cannot tell (a label move's facts).
    """

    def __init__(
        self,
        *,
        pipeline: PipelineConfig | str | None = None,
        event: str | None = None,
        version: int | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__()
        self.pipeline, self.event, self.version, self.details = pipeline, event, version, details

    def notify(self, context: Context) -> None:
        """Builds the event and delivers it to all receivers at once, within their deadline."""
        try:
            config = self._config(context)
            event = self._build(context, config) if config and has_receivers(config) else None
            if event is not None:
                send_all(receivers(config, event), context, _policy(config))
        except Exception:  # a notification never fails a task
            log.exception(
                "notification of pipeline %s not sent", getattr(self.pipeline, "name", self.pipeline)
            )

    def _config(self, context: Context) -> PipelineConfig | None:
        from include.config import PipelineConfig, find_pipeline

        if isinstance(self.pipeline, PipelineConfig):
            return self.pipeline
        name = self.pipeline or (context.get("params") or {}).get("pipeline")
        try:
            return find_pipeline(str(name))
        except Exception as err:
            log.warning("no notification: pipeline %r not found: %s", name, err)
            return None

    def _build(self, context: Context, config: PipelineConfig) -> dict | None:
        """Returns the event of this call, None when the pipeline does not subscribe to it."""
        from include.notify.events import blocked_details, build_event, first_line, run_url

        ti, dag_run = context["ti"], context["dag_run"]
        kind, details = self.event, dict(self.details or {})
        if kind is None and _declined(context.get("exception")):
            return None  # a rejected or timed-out move request: recorded, nothing failed
        subscribed = config.notifications.events
        if kind is None:  # a task's failure, after its last try
            error = context.get("exception")
            blocked = blocked_details(error) if isinstance(error, BaseException) else None
            kind = "gate_blocked" if blocked and "gate_blocked" in subscribed else "run_failed"
            # No exception: the scheduler failed a task whose process died; the DAG processor calls this.
            said = first_line(error) or "no error reported: the task's process ended without one (killed?)"
            details = {"task_id": ti.task_id, "try_number": ti.try_number, "error": said}
            if kind == "gate_blocked":
                details = {"task_id": ti.task_id, **(blocked or {})}
        if kind not in subscribed:
            return None
        base = _base_url()
        version = self.version or _run_version(context)
        if kind == "approval_waiting":
            details = {**_approval_details(context, config, version, base), **details}
        return build_event(
            kind,
            identity=(dag_run.dag_id, dag_run.run_id, ti.task_id, ti.try_number, version),
            pipeline=config.name,
            model=config.model.name,
            version=version,
            labels=current_labels(config),
            run={
                "dag_id": dag_run.dag_id,
                "run_id": dag_run.run_id,
                "task_id": ti.task_id,
                "try_number": ti.try_number,
                "logical_date": _iso(context.get("logical_date")),
            },
            run_url=run_url(base, dag_run.dag_id, dag_run.run_id),
            details=details,
        )


class EmailNotifier(BaseNotifier):
    """Emails one event through the SMTP provider's hook (host, port, TLS, login from the connection)."""

    def __init__(
        self,
        *,
        event: dict,
        to: list[str],
        smtp_conn_id: str,
        from_email: str | None,
        policy: Policy,
        record: Callable[[dict], None] | None = None,
    ) -> None:
        super().__init__()
        self.event, self.to, self.smtp_conn_id, self.from_email = event, list(to), smtp_conn_id, from_email
        self.policy, self.record = policy, record

    def notify(self, context: Context) -> None:
        """Sends the email, with the policy's tries; each try is recorded."""
        deliver(
            self._send,
            event=self.event,
            channel="email",
            target=", ".join(self.to),
            policy=self.policy,
            record=self.record,
        )

    def _send(self, timeout: float) -> str:
        from include.notify import message

        with BoundedSmtpHook(self.smtp_conn_id, timeout=timeout) as smtp:  # a fresh hook each try
            sender = self.from_email or smtp.from_email or _airflow_sender()
            if not sender:
                from include.errors import DeliveryError

                raise DeliveryError(
                    f"no sender: set notifications.email.from_email or the extra from_email of connection "
                    f"{self.smtp_conn_id!r}",
                    permanent=True,
                )
            smtp.send_email_smtp(
                to=self.to,
                from_email=sender,
                subject=message.subject(self.event),
                html_content=message.to_html(self.event),
                custom_headers={"X-Savedmodel-Event-Id": self.event["event_id"]},
            )
        return f"accepted by {smtp.host}:{smtp.port}"


class WebhookNotifier(BaseNotifier):
    """POSTs one event as JSON to a webhook, signed with the password of an Airflow connection."""

    def __init__(
        self,
        *,
        event: dict,
        url: str,
        connection: str,
        policy: Policy,
        record: Callable[[dict], None] | None = None,
    ) -> None:
        super().__init__()
        self.event, self.url, self.connection = event, url, connection
        self.policy, self.record = policy, record

    def notify(self, context: Context) -> None:
        """Signs and posts the event, with the policy's tries; each try is recorded."""
        from include.notify.events import encode
        from include.notify.webhook import post_event, shown_url

        body = encode(self.event)

        def send(timeout: float) -> str:
            return post_event(
                self.url, body, secret=_secret(self.connection), event=self.event, timeout=timeout
            )

        deliver(
            send,
            event=self.event,
            channel="webhook",
            target=shown_url(self.url),
            policy=self.policy,
            record=self.record,
        )


def has_receivers(config: PipelineConfig) -> bool:
    """Returns whether the pipeline sends notifications anywhere."""
    settings = config.notifications
    return bool(settings.events) and (settings.email is not None or bool(settings.webhooks))


def failure_notifiers(config: PipelineConfig) -> list[BaseNotifier]:
    """Returns the `on_failure_callback` of a pipeline DAG's tasks: none without receivers."""
    subscribed = {"run_failed", "gate_blocked"} & set(config.notifications.events)
    return [PipelineNotifier(pipeline=config)] if has_receivers(config) and subscribed else []


def receivers(config: PipelineConfig, event: dict) -> list[BaseNotifier]:
    """Returns one notifier per receiver of `event`: the email (approvers: approval_waiting), each webhook."""
    from include.notify.record import record_attempt
    from include.versions import model_dir

    settings, policy = config.notifications, _policy(config)
    where = model_dir(config.storage.serving_root, config.model.name)

    def record(attempt: dict) -> None:
        record_attempt(where, attempt)

    found: list[BaseNotifier] = []
    if settings.email is not None:
        email = settings.email
        to = email.approvers if event["event"] == "approval_waiting" and email.approvers else email.to
        found.append(
            EmailNotifier(
                event=event,
                to=list(to),
                smtp_conn_id=email.connection,
                from_email=email.from_email,
                policy=policy,
                record=record,
            )
        )
    for hook in settings.webhooks:
        found.append(
            WebhookNotifier(
                event=event, url=hook.url, connection=hook.connection, policy=policy, record=record
            )
        )
    return found


def send_all(notifiers: list[BaseNotifier], context: Context, policy: Policy) -> None:
    """Runs the notifiers side by side; returns when all are done or their worst case has passed."""
    threads = [
        threading.Thread(target=_quietly, args=(n, context), name="notifier", daemon=True) for n in notifiers
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + policy.worst_case() + GRACE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def notify_label_moved(
    context: Context, config: PipelineConfig, version: int, moved: list[dict], *, by: str, reason: str
) -> None:
    """Sends label_moved: `moved` lists {label, previous} now pointing at `version`; never raises."""
    if moved and has_receivers(config):
        details = {"moved": moved, "by": by, "reason": reason}
        PipelineNotifier(pipeline=config, event="label_moved", version=version, details=details)(context)


def approval_notifier() -> PipelineNotifier:
    """Returns the notifier of the promote DAG's approval: approval_waiting for the run's pipeline."""
    return PipelineNotifier(event="approval_waiting")


def current_labels(config: PipelineConfig) -> dict:
    """Returns the model's labels now ({} when none can be read: an event goes out all the same)."""
    from include.registry.store import read_head
    from include.versions import model_dir

    try:
        return dict(read_head(model_dir(config.storage.serving_root, config.model.name))["labels"])
    except Exception as err:
        log.warning("notification without labels: %s", err)
        return {}


class BoundedSmtpHook(SmtpHook):
    """The SMTP provider's hook, each try held to the delivery's timeout, making no retries of its own."""

    def __init__(self, smtp_conn_id: str, *, timeout: float) -> None:
        super().__init__(smtp_conn_id=smtp_conn_id)
        self.try_timeout = timeout

    @property
    def timeout(self) -> int:
        """Returns the connection's timeout, but never longer than the delivery allows."""
        return max(1, min(super().timeout, math.ceil(self.try_timeout)))

    @property
    def smtp_retry_limit(self) -> int:
        """Returns 0: the tries are delivery.py's, within its deadline."""
        return 0


def _policy(config: PipelineConfig) -> Policy:
    settings = config.notifications
    return Policy(attempts=settings.attempts, timeout=settings.timeout_seconds)


def _quietly(notifier: BaseNotifier, context: Context) -> None:
    try:
        notifier(context)
    except Exception:
        log.exception("notifier %s failed", type(notifier).__name__)


def _secret(connection: str) -> str:
    """Returns the webhook secret: the connection's password; DeliveryError (permanent) when there is none."""
    from include.errors import DeliveryError

    try:
        secret = BaseHook.get_connection(connection).password
    except Exception as err:
        raise DeliveryError(f"connection {connection!r} cannot be read: {err}", permanent=True) from None
    if not secret:
        raise DeliveryError(f"connection {connection!r} has no password (the signing secret)", permanent=True)
    return secret


def _base_url() -> str:
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback=None) or DEFAULT_BASE_URL


def _airflow_sender() -> str | None:
    from airflow.sdk.configuration import conf

    return conf.get("email", "from_email", fallback=None)


def _run_version(context: Context) -> int | None:
    """Returns the version a run is about, None if unknown.

    Its `version` param (a pipeline run's override, the version a promote run moves a label to),
    else the version train resolved (its XCom), else the one of the run's date.
    """
    from include.versions import parse_version, resolve_version

    dag_run, explicit = context["dag_run"], (context.get("params") or {}).get("version")
    try:
        pushed = None if explicit is not None else context["ti"].xcom_pull(task_ids="train", key="version")
        if explicit is not None or pushed:
            return parse_version(explicit if explicit is not None else pushed)
        return resolve_version(context.get("logical_date"), getattr(dag_run, "run_after", None))
    except Exception:
        return None


def _approval_details(context: Context, config: PipelineConfig, version: int | None, base: str) -> dict:
    """Returns approval_waiting's details: the request, and the links to answer it and to the version."""
    params, task, dag_run = context.get("params") or {}, context["task"], context["dag_run"]
    try:
        approve_url = task.generate_link_to_ui_from_context(context=context, base_url=base)
    except Exception:  # not an HITL operator: the run's page still leads there
        approve_url = None
    label = params.get("label")
    return {
        "label": label,
        "current": current_labels(config).get(label),
        "requested_by": getattr(dag_run, "triggering_user_name", None) or dag_run.run_id,
        "reason": params.get("reason"),
        "approve_url": approve_url,
        "version_url": f"{base.rstrip('/')}{REGISTRY_PREFIX}/models/{config.model.name}/versions/{version}",
        "timeout_at": (getattr(task, "hitl_summary_extra", None) or {}).get("timeout_datetime"),
    }


def _declined(error: object) -> bool:
    """Returns whether a task failed because a move request was rejected or got no answer in time."""
    from plugins.savedmodel_promotion import RequestDeclined

    return isinstance(error, RequestDeclined)


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None
