"""Four-eyes approvals and what users type: approvers, refused answers, quoting, control characters."""

from __future__ import annotations

import html as html_module
import re
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput
from markdown_it import MarkdownIt

from include.config.schema import ServingConfig
from include.errors import RegistryError
from include.registry.approvals import ApproversError, assigned_approvers, decision_outcome
from include.registry.policy import check_reason
from include.text import control_character_problem, markdown_block, markdown_code
from plugins.savedmodel_promotion import approval_body, approvers_of, route_request

#: Reasons that try to forge the approver's dialog (issue #22): each must show as its own text.
FORGED = {
    "bold": "**accuracy 0.9990 (checked by admin)**",
    "heading": "# APPROVED BY SECURITY",
    "setext heading": "APPROVED BY SECURITY\n===",
    "html comment": "fine <!-- hidden: approve without looking -->",
    "remote image": "![pixel](https://evil.example/track.png)",
    "html image": '<img src="https://evil.example/track.png">',
    "link": "[the dashboard](https://evil.example/login)",
    "autolink": "see https://evil.example/x and <https://evil.example/y>",
    "code fence breakout": "```\n**bold**\n```\n~~~\n# heading",
    "backticks": "`` ` **x** ` ``",
    "table pipe": "| approved | yes |",
}
APPROVE = {"chosen_options": ["Approve"], "responded_by_user": {"id": "bob", "name": "bob"}}
SELF_APPROVE = {"chosen_options": ["Approve"], "responded_by_user": {"id": "alice", "name": "alice"}}


def rendered(markdown: str) -> str:
    """Returns the HTML a GitHub-flavoured Markdown renderer (tables, autolinks) makes of `markdown`."""
    return MarkdownIt("gfm-like").render(markdown)


def outside_code(html: str) -> str:
    """Returns the HTML with every code span and code block removed (what would render as markup)."""
    return re.sub(r"<code[^>]*>.*?</code>", "", html, flags=re.S)


def body_with(reason: str, requester: str = "alice") -> str:
    """Returns the approval dialog's body for a request of version 2 over stable version 1."""
    return approval_body(
        requester=requester,
        model="digits",
        version=2,
        reason=reason,
        candidate={"accuracy": 0.93, "loss": 0.21},
        stable=1,
        stable_metrics={"accuracy": 0.91, "loss": 0.25},
        version_url="/registry/models/digits/versions/2",
    )


# --- quoting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", FORGED.values(), ids=FORGED.keys())
def test_a_forged_reason_renders_as_its_own_text(reason):
    """Bold, headings, comments, images, links and fences in a reason render as code, nothing else."""
    html = rendered(body_with(reason))
    markup = outside_code(html)
    assert re.findall(r"<(h\d|img|table|strong|em|a)\b[^>]*>", markup) == [
        "strong",  # the requested version
        "table",  # the metrics
        "a",  # the version's page
    ]
    assert "<!--" not in html and "evil.example" not in markup
    shown = re.search(r"<pre><code[^>]*>(.*?)</code></pre>", html, flags=re.S).group(1)
    assert html_module.unescape(shown) == reason + "\n"  # verbatim, line breaks and all


@pytest.mark.parametrize("name", ["**admin**", "<b>x</b>", "` [a](http://e.x) `", "a|b"])
def test_a_user_name_renders_as_code(name):
    """A requester's name with Markdown or HTML in it is a code span in the dialog."""
    markup = outside_code(rendered(body_with("ok", requester=name)))
    assert "<b>" not in markup and "http://e.x" not in markup and markup.count("<strong>") == 1


def test_code_spans_and_blocks_outfence_the_text():
    """The fence is longer than any run of its character in the text."""
    assert markdown_code("a ``b`` c") == "``` a ``b`` c ```"
    assert markdown_block("x\n~~~~\ny") == "~~~~~text\nx\n~~~~\ny\n~~~~~"
    assert markdown_block("plain") == "~~~text\nplain\n~~~"


def test_the_dialog_shows_both_versions_metrics_side_by_side():
    """One row per metric: the requested version's value, then the current stable's."""
    html = rendered(body_with("better on recent data"))
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html)
    assert cells[:3] == ["held-out metric", "version 2 (requested)", "<code>stable</code>: version 1"]
    assert cells[3:] == ["<code>accuracy</code>", "0.93", "0.91", "<code>loss</code>", "0.21", "0.25"]


def test_the_dialog_without_a_stable_version_says_unset():
    """No stable yet: its column is headed unset and shows dashes."""
    body = approval_body(
        requester="alice", model="m", version=2, reason="r", candidate={"accuracy": 0.9},
        stable=None, stable_metrics={}, version_url="/v",
    )  # fmt: skip
    assert "`stable`: unset |" in body and "| ` accuracy ` | 0.9 | — |" in body


# --- control characters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, code",
    [
        ("a\x00b", "U+0000"),
        ("pay \u202eexe.txt", "U+202E"),
        ("zero\u200bwidth", "U+200B"),
        ("two\nlines", "U+000A"),
        ("tab\there", "U+0009"),
        ("line\u2028separator", "U+2028"),
        ("\x7f", "U+007F"),
    ],
)
def test_control_characters_are_named_with_the_field(text, code):
    """A control or format character is refused, naming the field, the code point and where."""
    problem = control_character_problem("reason", text)
    assert problem.startswith(f"reason: control character {code} (") and "position" in problem


def test_plain_text_passes():
    """Letters of any script, digits, punctuation, emoji and ordinary spaces are fine."""
    assert control_character_problem("reason", "Besser für Daten, Ελληνικά — ok 👍 <b>*x*</b> 100%") is None


def test_the_registry_refuses_a_reason_with_a_control_character():
    """Every label move checks its reason before it looks at anything."""
    with pytest.raises(RegistryError, match=r"reason: control character U\+202E"):
        check_reason("rollback \u202e")
    with pytest.raises(RegistryError, match="reason: moving a label needs a reason"):
        check_reason("  ")


def test_the_page_refuses_a_reason_with_a_control_character():
    """The Models page's request answers 400 naming the field, before it triggers anything."""
    from fastapi import HTTPException

    from plugins.savedmodel_registry_app import request_label_move

    with pytest.raises(HTTPException) as refused:
        request_label_move(None, 1, "stable", "ok\x00", user=None)
    assert refused.value.status_code == 400 and refused.value.detail.startswith(
        "reason: control character U+0000"
    )


def test_the_promote_dag_refuses_a_reason_with_a_control_character(monkeypatch):
    """route_request fails (no retry) naming the field, and pushes nothing."""
    pushed = []
    ti = SimpleNamespace(xcom_push=lambda **kw: pushed.append(kw))
    context = {
        "params": {"pipeline": "nope", "version": 1, "label": "stable", "reason": "ok \u202e"},
        "ti": ti,
        "dag_run": SimpleNamespace(triggering_user_name="alice", run_id="manual__1"),
    }
    monkeypatch.setattr("plugins.savedmodel_promotion.get_current_context", lambda: context)
    with pytest.raises(AirflowFailException, match=r"reason: control character U\+202E"):
        route_request.function()
    assert pushed == []


# --- approvers ----------------------------------------------------------------------------------


def test_approvers_are_users_and_role_holders_never_the_requester():
    """Named users and the holders of named roles, in order, without duplicates or the requester."""
    by_role = {"admin": ["alice", "carol"], "user": ["bob"], "viewer": ["vic"]}
    assert assigned_approvers(["bob", "dave"], ["Admin"], by_role, requester="alice") == [
        "bob",
        "dave",
        "carol",
    ]
    assert assigned_approvers([], ["user"], by_role, requester="bob") == []


SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def test_approvers_that_leave_only_the_requester_are_refused():
    """A pipeline whose approvers are only the requester cannot ask anyone: refused at once."""
    approvers = ServingConfig.model_validate({"approvers": {"users": ["alice"]}}).approvers
    with pytest.raises(ApproversError, match=r"nobody but the requester \(alice\)"):
        approvers_of(approvers, requester="alice")
    assert approvers_of(approvers, requester="bob") == ["alice"]


def test_without_approvers_everyone_who_may_answer_but_the_requester_is_assigned(monkeypatch):
    """No serving.approvers: the simple auth manager's users of role user, op or admin, but the requester."""
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin,bob:user,vic:viewer,olga:op")
    assert approvers_of(None, requester="alice") == ["bob", "olga"]
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin,vic:viewer")
    with pytest.raises(ApproversError, match=r"nobody but the requester \(alice\)"):
        approvers_of(None, requester="alice")  # a single admin (make airflow) cannot approve itself


def test_without_approvers_another_auth_manager_decides(monkeypatch):
    """Another auth manager: nobody is assigned (Airflow decides), the answer is checked afterwards."""
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "airflow.providers.fab.auth_manager.FabAuthManager")
    assert approvers_of(None, requester="alice") is None
    roles = ServingConfig.model_validate({"approvers": {"roles": ["admin"]}}).approvers
    with pytest.raises(ApproversError, match=r"serving\.approvers\.roles: roles are resolved"):
        approvers_of(roles, requester="alice")


def test_roles_are_resolved_from_the_simple_auth_manager_users(monkeypatch):
    """Roles expand to the simple auth manager's users holding them."""
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin,bob:user,carol:admin:team1")
    approvers = ServingConfig.model_validate({"approvers": {"roles": ["admin"]}}).approvers
    assert approvers_of(approvers, requester="alice") == ["carol"]


def test_the_approvers_key_names_someone():
    """`serving.approvers` with neither users nor roles is an error naming the key."""
    with pytest.raises(ValueError, match="expected at least one of users, roles"):
        ServingConfig.model_validate({"approvers": {}})


def test_an_approve_by_the_requester_or_a_stranger_is_refused():
    """Approve counts only from someone else than the requester, among the approvers when named."""
    assert decision_outcome(APPROVE, requester="alice", approvers=None) == ("approved", "bob")
    assert decision_outcome(SELF_APPROVE, requester="alice", approvers=None) == (
        "self_approval_refused", "alice",
    )  # fmt: skip
    assert decision_outcome(SELF_APPROVE, requester="alice", approvers=["alice", "bob"])[0] == (
        "self_approval_refused"
    )
    assert decision_outcome(APPROVE, requester="alice", approvers=["carol"]) == ("not_an_approver", "bob")
    reject = {**SELF_APPROVE, "chosen_options": ["Reject"]}
    assert decision_outcome(reject, requester="alice", approvers=["bob"]) == ("rejected", "alice")


def test_the_approval_is_assigned_to_the_routed_approvers(monkeypatch):
    """approve_stable hands Airflow the approvers route_request found as its assigned_users."""
    from plugins.savedmodel_promotion import approve_stable

    asked = {}
    monkeypatch.setattr(
        "airflow.providers.standard.operators.hitl.upsert_hitl_detail", lambda **kw: asked.update(kw)
    )
    ti = SimpleNamespace(id="ti-1", xcom_pull=lambda **kw: {"approvers": ["bob", "carol"], "body": "b"})
    operator = approve_stable()
    operator.notifiers = []
    with pytest.raises(TaskAwaitingInput):  # waits under Required actions (Airflow 3.3)
        operator.execute({"task_instance": ti, "ti": ti})
    assert asked["assigned_users"] == [{"id": "bob", "name": "bob"}, {"id": "carol", "name": "carol"}]


# --- requests that never block each other ---------------------------------------------------------


def guarded(approval: str) -> SimpleNamespace:
    """Returns a pipeline config as max_active_runs reads it."""
    return SimpleNamespace(serving=SimpleNamespace(promotion_approval=approval))


def test_the_promote_dag_keeps_runs_free_for_moves_whatever_waits(monkeypatch):
    """max_active_runs: every approval that may wait (max_pending per guarded pipeline), plus MOVE_SLOTS."""
    from include.registry.approvals import MAX_PENDING
    from plugins.savedmodel_promotion import MOVE_SLOTS, max_active_runs

    configs = [guarded("required"), guarded("none"), guarded("required")]
    assert max_active_runs(configs) == 2 * MAX_PENDING + MOVE_SLOTS
    monkeypatch.setenv("SAVEDMODEL_MAX_PENDING_REQUESTS", "1")
    monkeypatch.setenv("SAVEDMODEL_PROMOTE_MOVE_SLOTS", "1")
    assert max_active_runs(configs) == 3 and max_active_runs([]) == 1


def test_the_promote_dag_sets_its_max_active_runs(monkeypatch):
    """The DAG carries the cap (Airflow's default of 16 active runs would let approvals fill it)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    from include.config import load_all_pipelines
    from plugins.savedmodel_promotion import max_active_runs

    monkeypatch.delenv("SAVEDMODEL_PIPELINES_DIR", raising=False)
    dags = Path(__file__).parents[1] / "dags" / "savedmodel_promote.py"
    dag = DagBag(dag_folder=str(dags)).dags["savedmodel_promote"]
    assert dag.max_active_runs == max_active_runs(load_all_pipelines()[0]) > 16


def test_a_label_as_of_a_request_counts_moves_asked_for_before_it():
    """Moves count from when they were asked for: one asked for later that landed first is left out."""
    import datetime as dt

    from include.registry.policy import label_as_of

    def at(minute: int) -> str:
        return f"2026-12-07T10:{minute:02d}:00+00:00"

    history = [
        {"event": "label", "label": "canary", "version": 1, "at": at(0)},  # a publish
        {"event": "label", "label": "stable", "version": 9, "at": at(1)},
        {
            "event": "label",
            "label": "canary",
            "version": 3,
            "previous": 1,
            "at": at(5),
            "requested_at": at(4),
        },
        {
            "event": "label",
            "label": "canary",
            "version": 2,
            "previous": 3,
            "at": at(6),
            "requested_at": at(2),
        },
    ]

    def when(minute: int) -> dt.datetime:
        return dt.datetime.fromisoformat(at(minute))

    assert label_as_of(history, "canary", when(1), current=2) == 1
    assert label_as_of(history, "canary", when(3), current=2) == 2  # asked at 2, landed last
    assert label_as_of(history, "canary", when(4), current=2) == 2
    assert label_as_of(history, "stable", when(0), current=9) is None  # before its first move
    assert label_as_of([], "canary", when(0), current=7) == 7  # no history at all
    rebuilt = [*history, {"event": "rebuild", "labels": {"stable": 9}, "at": at(7)}]
    assert label_as_of(rebuilt, "canary", when(1), current=None) is None  # dropped by the rebuild
    assert label_as_of([*rebuilt, history[0]], "canary", when(8), current=1) == 1


def test_a_declined_request_sends_no_run_failed():
    """A rejection or timeout fails approve_stable, but the failure callback sends nothing for it."""
    from plugins.savedmodel_notifiers import PipelineNotifier
    from plugins.savedmodel_promotion import RequestDeclined

    context = {
        "ti": SimpleNamespace(task_id="approve_stable", try_number=1),
        "dag_run": SimpleNamespace(dag_id="savedmodel_promote", run_id="manual__1"),
        "exception": RequestDeclined("rejected by bob: nothing moved"),
    }
    assert isinstance(context["exception"], AirflowFailException)  # no retry either
    assert PipelineNotifier()._build(context, config=None) is None
