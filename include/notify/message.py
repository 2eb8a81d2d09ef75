"""An event in words: the subject and HTML body of its email."""

from __future__ import annotations

import html

#: Starts every subject, so that mail filters can pick the pipeline's notices out.
SUBJECT_PREFIX = "[savedmodel]"


def subject(event: dict) -> str:
    """Returns the email subject of an event, e.g. `[savedmodel] digits_softmax: data checks blocked …`."""
    kind, details, version = event["event"], event["details"], event.get("version")
    at = f"version {version}" if version is not None else "the run"
    if kind == "run_failed":
        words = f"run failed in {details.get('task_id')} ({at})"
    elif kind == "gate_blocked":
        gate = "data checks" if details.get("gate") == "data_checks" else "quality gate"
        words = f"{gate} blocked {at}"
    elif kind == "approval_waiting":
        words = f"approve {details.get('label')} -> version {version}?"
    else:
        moved = ", ".join(m["label"] for m in details.get("moved", []))
        words = f"{moved} -> version {version}"
    return f"{SUBJECT_PREFIX} {event['pipeline']}: {words}"


def facts(event: dict) -> list[tuple[str, str]]:
    """Returns an event's facts as (name, value) pairs, in the order an email shows them."""
    details = event["details"]
    labels = ", ".join(f"{k} {v}" for k, v in event.get("labels", {}).items()) or "none"
    rows = [
        ("Event", event["event"]),
        ("Pipeline", event["pipeline"]),
        ("Model", event["model"]),
        ("Version", str(event.get("version") or "-")),
        ("Labels", labels),
    ]
    if event["event"] == "run_failed":
        rows += [
            ("Task", f"{details.get('task_id')} (try {details.get('try_number')})"),
            ("Error", details.get("error") or "-"),
        ]
    elif event["event"] == "gate_blocked":
        rows += [("Error", details.get("error") or "-"), ("Failing checks", str(details.get("failing_rows")))]
    elif event["event"] == "approval_waiting":
        rows += [
            ("Label", f"{details.get('label')} (now {details.get('current') or 'unset'})"),
            ("Requested by", str(details.get("requested_by"))),
            ("Reason", str(details.get("reason"))),
            ("Answer by", str(details.get("timeout_at") or "-")),
            ("Approve or reject", str(details.get("approve_url"))),
        ]
    else:
        moved = ", ".join(
            f"{m['label']} (was {m.get('previous') or 'unset'})" for m in details.get("moved", [])
        )
        rows += [("Moved", moved), ("By", str(details.get("by"))), ("Reason", str(details.get("reason")))]
    rows += [("Run", event.get("run_url") or "-"), ("Event id", event["event_id"])]
    return rows


def to_html(event: dict) -> str:
    """Returns the HTML body of an event's email: a table of its facts, links clickable, all escaped."""
    cells = []
    for name, value in facts(event):
        shown = html.escape(value)
        if value.startswith(("http://", "https://")):
            shown = f'<a href="{html.escape(value, quote=True)}">{shown}</a>'
        cells.append(f"<tr><th align='left'>{html.escape(name)}</th><td>{shown}</td></tr>")
    body = [f"<p>{html.escape(subject(event))}</p>", f"<table>{''.join(cells)}</table>"]
    failed = event["details"].get("failed") if event["event"] == "gate_blocked" else None
    if failed:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in failed)
        body.append(f"<p>Failing checks:</p><ul>{items}</ul>")
    return "<html><body>" + "".join(body) + "</body></html>"
