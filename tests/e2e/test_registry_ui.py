"""The Models pages in headless Chromium against a real api-server, scheduler and triggerer.

Two real runs of a small pipeline publish two versions (the first `stable`, the second `canary`);
then: the Models list and the model page with its chart (screenshots in test-artifacts/), the
page in the UI's navigation, refusals for an anonymous caller and for a Viewer, and promotions of
the second version to `stable` that wait in the promote DAG's ApprovalOperator until a person
answers on the UI's Required actions page. Four eyes, two users: the admin (A) requests; the
pipeline's approvers are role admin and user bob, so only bob (B) is assigned. B rejects a request
whose reason tries to forge the dialog (nothing changes, the reason shows as text); then A cannot
approve their own request, in the UI or through the REST API (nothing moves), and B approves in a
dialog that shows both versions' metrics (test-artifacts/approval-dialog.png): the label moves,
models.config follows, the history names requester A and approver B. Then a partition of the
pipeline's data is rewritten in other units and the next real run is blocked by the data checks
before training, its report on the model page; last, a check report on the newer version and a
hostile blocked report render as text (screenshots of both reports in test-artifacts/); requests
never block each other (an identical stable request merges into the waiting one, a canary move
completes while it waits, the model page lists it with its Required action, a rejection leaves the
run failed), with the promote DAG's cap set small through its environment (a model may have one
request waiting, two active runs); and every kind of link from the Models pages into Airflow,
clicked inside the UI's frame, lands there.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from include.config import PROJECT_ROOT
from include.durable import locked
from include.registry.store import blocked_runs, manifest_update, read_manifest, record_blocked
from tests.e2e.airflow_api import AirflowApi
from tests.helpers import copy_data, make_raw, write_pipeline
from tests.test_registry_ui import ESCAPED, HOSTILE, blocked_report, checked_fields
from tools.local_airflow import DEFAULT_PASSWORD, DEFAULT_USER, LocalAirflow, free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
MODEL = "reg_digits"
VIEWER, VIEWER_PASSWORD = "viewer", "viewer"
APPROVER, APPROVER_PASSWORD = "bob", "bob"  # B: role user, named in serving.approvers
#: C: role user, but the auth manager denies her the pipeline's DAG (tests/per_dag_auth.py).
OUTSIDER, OUTSIDER_PASSWORD = "carol", "carol"
#: A reason that tries to forge the approver's dialog (issue #22): bold, a heading, an image.
FORGED_REASON = "not yet **APPROVED BY SECURITY** ![x](http://127.0.0.1:9/pixel.png) <!-- hidden -->"
DAYS = ("2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00")
OLDER, NEWER = 20261101000000, 20261102000000


@dataclass
class Registry:
    """The running Airflow, its REST client as admin, and the serving root of the pipeline."""

    airflow: LocalAirflow
    api: AirflowApi
    serving: Path
    data: Path  # the pipeline's own copy of the example data

    def labels(self) -> dict:
        """Returns the model's labels as the registry records them."""
        return read_manifest(self.serving / MODEL)["labels"]

    def models_config(self) -> str:
        """Returns TF Serving's models.config under the serving root."""
        return (self.serving / "models.config").read_text()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, example_data):
    """Yields a local Airflow (admin and viewer users) after two real runs published two versions."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (see .ci/run)")
    store, pipelines = (
        tmp_path_factory.mktemp("registry-store"),
        tmp_path_factory.mktemp("registry-pipelines"),
    )
    # A copy of the data: the last test changes a partition of it, as an upstream job would.
    data = copy_data(example_data, store / "data")
    raw = make_raw(store, data, name=MODEL, schedule=None)
    raw["model"]["name"] = MODEL
    raw["training"]["steps"] = 200
    assert raw["serving"]["promotion_approval"] == "required"  # the example's default
    # Four eyes: the admin role (A, who requests) and bob (B); the requester is never assigned.
    raw["serving"]["approvers"] = {"users": [APPROVER], "roles": ["admin"]}
    write_pipeline(pipelines, raw)
    home = tmp_path_factory.mktemp("registry-home")
    (home / "passwords.json").write_text(
        json.dumps(
            {
                DEFAULT_USER: DEFAULT_PASSWORD,
                VIEWER: VIEWER_PASSWORD,
                APPROVER: APPROVER_PASSWORD,
                OUTSIDER: OUTSIDER_PASSWORD,
            }
        )
    )
    users = f"{DEFAULT_USER}:admin,{VIEWER}:viewer,{APPROVER}:user,{OUTSIDER}:user"
    extra = {
        "SAVEDMODEL_PIPELINES_DIR": str(pipelines),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
        # Rights per DAG, as FAB or Keycloak give them: carol may trigger the promote DAG, not MODEL.
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.per_dag_auth.PerDagAuthManager",
        "SAVEDMODEL_TEST_DENIED": f"{OUTSIDER}:{MODEL}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        # A small cap: one request of the model may wait, one run more for everything else.
        "SAVEDMODEL_MAX_PENDING_REQUESTS": "1",
        "SAVEDMODEL_PROMOTE_MOVE_SLOTS": "1",
    }
    airflow = LocalAirflow(home, port=free_port(), fast=True, extra_env=extra)
    try:
        airflow.start()
        api = AirflowApi(airflow.url)
        for dag_id in (MODEL, "savedmodel_promote"):
            api.wait_for_dag(dag_id)
            api.unpause(dag_id)
        for day in DAYS:
            api.trigger(MODEL, logical_date=day)
        runs = api.wait_for_runs(MODEL, 2, timeout=600)
        assert all(r["state"] == "success" for r in runs), [
            api.failure_report(MODEL, r["dag_run_id"]) for r in runs
        ]
        yield Registry(airflow, api, store / "serving", data)
    finally:
        airflow.stop()


@pytest.fixture(scope="module")
def browser(registry):
    """Yields headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def logged_in(browser, registry: Registry, username: str, password: str):
    """Returns a page of its own browser context, logged in to the Airflow UI as `username`."""
    tab = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    tab.goto(registry.airflow.url + "/")
    tab.locator("input[name=username]").fill(username)
    tab.locator("input[name=password]").fill(password)
    tab.locator("button[type=submit]").click()
    tab.wait_for_url(registry.airflow.url + "/")
    return tab


@pytest.fixture(scope="module")
def page(browser, registry):
    """A page logged in to the Airflow UI as the admin (A: requests moves)."""
    return logged_in(browser, registry, DEFAULT_USER, DEFAULT_PASSWORD)


@pytest.fixture(scope="module")
def page_b(browser, registry):
    """A page logged in as bob (B: an approver of the pipeline)."""
    return logged_in(browser, registry, APPROVER, APPROVER_PASSWORD)


def call(
    url: str, method: str = "GET", path: str = "/", *, token: str | None = None, body: dict | None = None
):
    """Returns (status, headers, text) of one request, redirects not followed."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def token_of(url: str, username: str, password: str) -> str:
    """Returns a JWT for a user from Airflow's own token endpoint."""
    status, _, text = call(url, "POST", "/auth/token", body={"username": username, "password": password})
    assert status in (200, 201), text
    return json.loads(text)["access_token"]


def request_stable(page, registry: Registry, version: int, reason: str) -> str:
    """Asks for `stable` -> version on the version's page; returns the promote run it started."""
    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}/versions/{version}")
    form = page.locator("form.move").filter(has=page.locator("input[name=label][value=stable]"))
    form.locator("textarea[name=reason]").fill(reason)
    form.locator("button[type=submit]").click()
    page.locator("#requested").wait_for()
    assert "waits for a person's approval" in page.content()
    return page.locator("#promote-run").inner_text().split(" / ", 1)[1]


def approval_task(run_id: str) -> str:
    """Returns the REST path of a promote run's approval step."""
    return f"/api/v2/dags/savedmodel_promote/dagRuns/{quote(run_id)}/taskInstances/approve_stable"


def open_the_approval(page, registry: Registry, run_id: str) -> None:
    """Waits for the approval to ask, then opens its Required action in the UI."""
    api, task = registry.api, approval_task(run_id)
    deadline = time.monotonic() + 180
    while api.get(task)["state"] != "awaiting_input":
        assert time.monotonic() < deadline, f"approve_stable never asked: {api.get(task)['state']}"
        time.sleep(2)
    run_path = f"/dags/savedmodel_promote/runs/{quote(run_id, safe='')}/tasks/approve_stable/required_actions"
    page.goto(registry.airflow.url + run_path)
    page.get_by_role("button", name="Approve", exact=True).wait_for()


def answer_in_the_ui(page, registry: Registry, run_id: str, choice: str) -> dict:
    """Opens the approval, clicks Approve or Reject on its Required action; returns the finished run."""
    open_the_approval(page, registry, run_id)
    return answer_open_approval(page, registry, run_id, choice)


def answer_open_approval(page, registry: Registry, run_id: str, choice: str) -> dict:
    """Clicks Approve or Reject on the approval open in `page`; returns the finished run.

    Airflow 3.3 can lose an answer given within seconds of the approval starting to wait: when the
    scheduler handles the paused try's exit only after the answer queued the task again, it logs
    "finished with state success, but the task instance's state attribute is queued" and marks
    the task up for retry, whose try asks again (the person's answer was never processed, so
    nothing was recorded or moved). A person would see the request again and answer it again;
    so does this, at most three times.
    """
    api = registry.api
    for _ in range(3):
        asked = api.get(approval_task(run_id))["try_number"]
        page.get_by_role("button", name=choice, exact=True).click()
        deadline = time.monotonic() + 180
        while True:
            run = api.get(f"/api/v2/dags/savedmodel_promote/dagRuns/{quote(run_id)}")
            if run["state"] in ("success", "failed"):
                return run
            task = api.get(approval_task(run_id))
            if task["try_number"] > asked and task["state"] == "awaiting_input":
                break  # asked again: the answer was lost (see above)
            assert time.monotonic() < deadline, f"run {run_id} still {run['state']}, approval {task['state']}"
            time.sleep(2)
        open_the_approval(page, registry, run_id)
    raise AssertionError(f"the approval of {run_id} asked three times")


def test_models_page_lists_the_published_version_and_charts_it(registry, page):
    """The Models list shows the newest version with its accuracy; the model page draws the chart."""
    from playwright.sync_api import expect

    accuracy = read_manifest(registry.serving / MODEL)["versions"][str(NEWER)]["metrics"]["eval_accuracy"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(registry.airflow.url + "/registry/")
    row = page.locator(f"#models tr[data-model={MODEL}]")
    expect(row).to_contain_text(str(NEWER))
    expect(row.locator("td.accuracy")).to_have_text(f"{accuracy:.4g}")
    page.screenshot(path=str(ARTIFACTS / "registry-models.png"), full_page=True)

    row.locator(f"a[href$='/models/{MODEL}']").click()
    chart = page.locator("#chart svg")
    expect(chart.locator("polyline")).to_have_count(2)  # accuracy and loss
    expect(chart.locator("g.mark[data-labels=stable]").first).to_be_visible()
    expect(page.locator(f"#versions tr[data-version='{NEWER}']")).to_contain_text("canary")
    page.screenshot(path=str(ARTIFACTS / "registry-model.png"), full_page=True)


def test_the_ui_navigation_embeds_the_models_page(registry, page):
    """ "Models" is in the Airflow UI's navigation and shows the registry inside the UI."""
    from playwright.sync_api import expect

    page.goto(registry.airflow.url + "/")
    page.get_by_role("link", name="Models").click()
    frame = page.frame_locator("iframe")
    expect(frame.locator(f"#models tr[data-model={MODEL}]")).to_be_visible()


def test_anonymous_requests_are_refused(registry):
    """Without a login the JSON endpoints answer 401 and the pages send the browser to Airflow's login."""
    url = registry.airflow.url
    assert call(url, "GET", "/registry/api/models")[0] == 401
    status, headers, _ = call(url, "GET", f"/registry/models/{MODEL}")
    assert status == 303 and "/auth/login" in headers["location"]
    post = call(
        url, "POST", f"/registry/api/models/{MODEL}/versions/{NEWER}/labels", body={"label": "stable"}
    )
    assert post[0] == 401


def test_a_viewer_reads_but_cannot_request_a_promotion(registry):
    """A Viewer sees the model but gets 403 asking for a move, and no form; nothing is triggered."""
    url, viewer = registry.airflow.url, token_of(registry.airflow.url, VIEWER, VIEWER_PASSWORD)
    status, _, text = call(url, "GET", "/registry/api/models", token=viewer)
    assert status == 200 and [m["model"] for m in json.loads(text)["models"]] == [MODEL]
    body = {"label": "stable", "reason": "viewer tries"}
    status, _, text = call(
        url, "POST", f"/registry/api/models/{MODEL}/versions/{NEWER}/labels", token=viewer, body=body
    )
    assert status == 403, text
    status, _, html = call(url, "GET", f"/registry/models/{MODEL}/versions/{NEWER}", token=viewer)
    assert status == 200 and "<form" not in html and "may read this model but not request" in html
    assert registry.api.runs("savedmodel_promote") == []


def test_moving_labels_needs_the_right_to_trigger_their_pipeline_on_every_route(registry):
    """carol may trigger the promote DAG but not the pipeline's DAG: the REST trigger is refused (403,
    naming the pipeline, no run), and so is the Models page's request; the admin's REST trigger of
    the same move goes through with its conf intact."""
    url, api = registry.airflow.url, registry.api
    carol = token_of(url, OUTSIDER, OUTSIDER_PASSWORD)
    runs = "/api/v2/dags/savedmodel_promote/dagRuns"
    before = api.get(runs)["total_entries"]
    conf = {"pipeline": MODEL, "version": NEWER, "label": "canary", "reason": "carol's try"}
    status, _, text = call(url, "POST", runs, token=carol, body={"logical_date": None, "conf": conf})
    assert status == 403, text
    assert f"may not trigger {MODEL}" in json.loads(text)["detail"]
    status, _, text = call(url, "POST", runs, token=carol, body={"logical_date": None})  # default pipeline
    assert status == 403, text
    page_post = call(
        url, "POST", f"/registry/api/models/{MODEL}/versions/{NEWER}/labels", token=carol,
        body={"label": "canary", "reason": "carol's try"},
    )  # fmt: skip
    assert page_post[0] == 403, page_post
    assert api.get(runs)["total_entries"] == before  # nothing was triggered

    conf["reason"] = "the admin may"
    status, _, text = call(url, "POST", runs, token=token_of(url, DEFAULT_USER, DEFAULT_PASSWORD),
                           body={"logical_date": None, "conf": conf})  # fmt: skip
    assert status in (200, 201), text
    run = api.wait_for_run("savedmodel_promote", json.loads(text)["dag_run_id"], timeout=180)
    assert run["state"] == "success" and run["conf"] == conf  # the body reached Airflow as it was sent
    assert registry.labels()["canary"] == NEWER


def test_a_rejected_promotion_changes_nothing(registry, page, page_b):
    """A asks for stable -> newer with a forging reason; B sees it as text and rejects: nothing changes."""
    from playwright.sync_api import expect

    before, config_before = registry.labels(), registry.models_config()
    assert before == {"stable": OLDER, "canary": NEWER}
    run_id = request_stable(page, registry, NEWER, FORGED_REASON)
    open_the_approval(page_b, registry, run_id)
    expect(page_b.get_by_text(FORGED_REASON)).to_be_visible()  # verbatim, in a code block
    assert page_b.locator("strong", has_text="APPROVED BY SECURITY").count() == 0
    assert page_b.locator("img[src*='pixel']").count() == 0
    assert answer_in_the_ui(page_b, registry, run_id, "Reject")["state"] == "failed"  # not green
    assert registry.labels() == before and registry.models_config() == config_before
    last = read_manifest(registry.serving / MODEL)["history"][-1]
    assert (last["event"], last["outcome"], last["by"], last["requested_by"], last["reason"]) == (
        "approval", "rejected", APPROVER, DEFAULT_USER, FORGED_REASON,
    )  # fmt: skip


def test_the_requester_cannot_approve_and_another_approver_moves_stable(registry, page, page_b):
    """A requests stable -> newer; A's Approve is refused (UI and REST), nothing moves; B approves.

    B's dialog shows both versions' held-out metrics side by side (test-artifacts/approval-dialog.png);
    the label moves, models.config and the pages follow, and the history names requester A, approver B.
    """
    from playwright.sync_api import expect

    run_id = request_stable(page, registry, NEWER, "better on recent data")
    open_the_approval(page, registry, run_id)
    hitl = f"{approval_task(run_id)}/-1/hitlDetails"
    with page.expect_response(lambda r: "hitlDetails" in r.url and r.request.method == "PATCH") as sent:
        page.get_by_role("button", name="Approve", exact=True).click()  # A, an admin, on their own request
    assert sent.value.status == 403, sent.value.text()  # the UI's answer, refused by Airflow's API
    admin = token_of(registry.airflow.url, DEFAULT_USER, DEFAULT_PASSWORD)
    body = {"chosen_options": ["Approve"], "params_input": {}}
    status, _, text = call(registry.airflow.url, "PATCH", hitl, token=admin, body=body)
    assert status == 403 and "not a respondent" in text, text
    assert registry.api.get(approval_task(run_id))["state"] == "awaiting_input"
    assert registry.api.get(hitl)["response_received"] is False
    assert registry.labels() == {"stable": OLDER, "canary": NEWER}

    open_the_approval(page_b, registry, run_id)
    expect(page_b.get_by_text(f"version {NEWER} (requested)")).to_be_visible()
    expect(page_b.get_by_text(f"version {OLDER}").first).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page_b.screenshot(path=str(ARTIFACTS / "approval-dialog.png"), full_page=True)
    assert answer_open_approval(page_b, registry, run_id, "Approve")["state"] == "success"
    assert registry.labels() == {"stable": NEWER, "canary": NEWER}
    assert f'version_labels {{ key: "stable" value: {NEWER} }}' in registry.models_config()
    approval, move = read_manifest(registry.serving / MODEL)["history"][-2:]
    assert (approval["outcome"], approval["requested_by"], approval["by"]) == (
        "approved", DEFAULT_USER, APPROVER,
    )  # fmt: skip
    assert (move["label"], move["version"], move["previous"], move["reason"]) == (
        "stable", NEWER, OLDER, "better on recent data",
    )  # fmt: skip
    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}")
    expect(page.locator(f"#versions tr[data-version='{NEWER}']")).to_contain_text("stable")
    expect(page.locator("#history tr.outcome-approved")).to_contain_text(f"approved by {APPROVER}")
    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}/versions/{NEWER}")
    expect(page.locator("#models-config")).to_contain_text(f'key: "stable" value: {NEWER}')


def test_a_run_on_changed_data_is_blocked_before_training_and_shown(registry, page):
    """A partition rewritten in other units (x100) stops the next real run in train, with its report.

    The task fails on its first try (permanent), its summary line names the check, the registry
    keeps the report, and the model page shows it (test-artifacts/models-page-blocked-run.png).
    """
    import tensorflow as tf
    from playwright.sync_api import expect
    from tensorflow.core.example import example_pb2

    from include.registry.store import blocked_runs

    newest = registry.data / "dt=2026-10-30" / "part-00000.tfrecord"
    records = []
    for raw in tf.compat.v1.io.tf_record_iterator(str(newest)):
        example = example_pb2.Example.FromString(raw)
        pixels = example.features.feature["x"].float_list.value
        pixels[:] = [value * 100 for value in pixels]
        records.append(example.SerializeToString())
    with tf.io.TFRecordWriter(str(newest)) as writer:
        for record in records:
            writer.write(record)

    run_id = registry.api.trigger(MODEL, logical_date="2026-11-03T00:00:00+00:00")
    run = registry.api.wait_for_run(MODEL, run_id, timeout=600)
    assert run["state"] == "failed", registry.api.failure_report(MODEL, run_id)
    train = registry.api.task_instance(MODEL, run_id, "train")
    assert train["state"] == "failed" and train["try_number"] == 1  # permanent: no retry
    log = "".join(
        path.read_text()
        for path in (registry.airflow.home / "logs").rglob("attempt=1*.log")
        if run_id in str(path) and "task_id=train" in str(path)
    )
    assert "savedmodel-summary: train: blocked by the data checks: feature x: max 100 in dt=2026-10-30" in log
    assert f"inferred from version {NEWER}" in log
    assert not (registry.serving / MODEL / "20261103000000").exists()

    blocked = blocked_runs(registry.serving / MODEL)[0]
    assert blocked["run_id"] == run_id and blocked["step"] == "train" and blocked["baseline_version"] == NEWER
    failed = {(row["subject"], row["statistic"]) for row in blocked["report"] if row["verdict"] == "fail"}
    assert {("feature x", "max"), ("feature x", "js_divergence")} <= failed

    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}")
    section = page.locator("#blocked")
    first = section.locator("tr.blocked").first
    expect(first).to_contain_text(run_id)
    expect(section.locator("tr.blocked-report").first).to_contain_text("feature x")
    ARTIFACTS.mkdir(exist_ok=True)
    section.screenshot(path=str(ARTIFACTS / "models-page-blocked-run.png"))


def test_a_check_report_and_a_blocked_run_render(registry, page):
    """A version's check report and a run the checks blocked show in the browser, user data as text."""
    from playwright.sync_api import expect

    model_dir = registry.serving / MODEL
    fields = checked_fields(model_dir)  # archives the statistics, under the model dir's lock
    with locked(model_dir), manifest_update(model_dir) as update:  # as if its data checks were forced
        update.put_entry(NEWER, {**update.entry(NEWER), **fields})
    run_id = read_manifest(model_dir)["versions"][str(OLDER)]["run_id"]
    record_blocked(model_dir, {**blocked_report(run_id), "dag_id": MODEL})

    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}/versions/{OLDER}")  # as its run left it
    expect(page.locator("#checks")).to_contain_text("metric eval_accuracy")
    expect(page.locator("#statistics tbody tr").first).to_have_attribute("data-feature", "x")

    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}/versions/{NEWER}")
    expect(page.locator("#forced")).to_contain_text("new clinic <b>joined</b>")
    expect(page.locator("#checks tbody tr").first).to_have_class("row-fail")
    expect(page.locator("#statistics tr[data-feature=sex] td.top-values")).to_contain_text(HOSTILE)
    expect(page.locator("#slices tbody tr")).to_have_count(2)
    assert page.locator("#checks img, #statistics img").count() == 0  # the hostile value is text

    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}")
    expect(page.locator(f"#versions tr[data-version='{NEWER}'] td.verdict")).to_have_text("forced")
    blocked = page.locator("#blocked")
    link = blocked.locator("tr.blocked a").first
    expect(link).to_have_attribute("href", f"/dags/{MODEL}/runs/{quote(run_id, safe='')}")
    expect(blocked.locator("tr.blocked-report").first.locator("tr.row-fail")).to_have_count(2)
    expect(blocked).to_contain_text(HOSTILE)
    assert blocked.locator("img").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    blocked.screenshot(path=str(ARTIFACTS / "models-page-blocked.png"))

    status, _, text = call(registry.airflow.url, "GET", f"/registry/api/models/{MODEL}",
                           token=token_of(registry.airflow.url, VIEWER, VIEWER_PASSWORD))  # fmt: skip
    assert status == 200 and json.loads(text)["blocked"][0]["run_id"] == run_id
    assert ESCAPED not in text  # JSON carries the value as it is; escaping is the page's job


def request_json(registry: Registry, version: int, label: str, reason: str) -> dict:
    """Asks for `label` -> version through the registry's JSON endpoint as the admin; returns the answer."""
    admin = token_of(registry.airflow.url, DEFAULT_USER, DEFAULT_PASSWORD)
    path = f"/registry/api/models/{MODEL}/versions/{version}/labels"
    status, _, text = call(
        registry.airflow.url, "POST", path, token=admin, body={"label": label, "reason": reason}
    )
    assert status == 202, text
    return json.loads(text)


def test_requests_never_block_each_other(registry, page, page_b):
    """A stable request waits; the same request again merges into it; a second one is refused at once
    (one may wait here); a canary move completes meanwhile, within a cap of two active runs; the model
    page lists the waiting request with its Required action; B rejects it and its run is failed.
    """
    from playwright.sync_api import expect

    api = registry.api
    assert api.get("/api/v2/dags/savedmodel_promote")["max_active_runs"] == 2
    assert registry.labels() == {"stable": NEWER, "canary": NEWER}
    waiting = request_stable(page, registry, OLDER, "roll back: newer drifts")
    open_the_approval(page, registry, waiting)  # routed: recorded as pending

    again = request_json(registry, OLDER, "stable", "roll back, asked again")
    assert again["merges_into"]["run_id"] == waiting
    assert api.wait_for_run("savedmodel_promote", again["run_id"], timeout=120)["state"] == "success"
    skipped = {t["task_id"]: t["state"] for t in api.task_instances("savedmodel_promote", again["run_id"])}
    assert skipped == {"route_request": "success", "approve_stable": "skipped", "move_label": "skipped"}

    other = request_json(registry, NEWER, "stable", "a second one while one waits")
    assert api.wait_for_run("savedmodel_promote", other["run_id"], timeout=120)["state"] == "failed"
    canary = request_json(registry, OLDER, "canary", "canary while stable waits")
    assert api.wait_for_run("savedmodel_promote", canary["run_id"], timeout=120)["state"] == "success"
    assert registry.labels() == {"stable": NEWER, "canary": OLDER}
    assert api.get(approval_task(waiting))["state"] == "awaiting_input"  # still waiting

    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}")
    row = page.locator(f"#pending-requests tr.pending[data-run-id='{waiting}']")
    expect(row).to_contain_text(f"stable → {OLDER}")
    expect(row).to_contain_text(f"{DEFAULT_USER} (also asked: {DEFAULT_USER}")
    decide = f"/dags/savedmodel_promote/runs/{quote(waiting, safe='')}/tasks/approve_stable/required_actions"
    assert row.locator("a.decide").get_attribute("href") == decide
    status, _, text = call(registry.airflow.url, "GET", f"/registry/api/models/{MODEL}", token=token_of(
        registry.airflow.url, DEFAULT_USER, DEFAULT_PASSWORD
    ))  # fmt: skip
    assert status == 200 and [p["run_id"] for p in json.loads(text)["pending"]] == [waiting]

    assert answer_in_the_ui(page_b, registry, waiting, "Reject")["state"] == "failed"
    assert api.get(approval_task(waiting))["state"] == "failed"
    assert registry.labels() == {"stable": NEWER, "canary": OLDER}
    page.goto(f"{registry.airflow.url}/registry/models/{MODEL}")
    expect(page.locator("#pending-requests")).to_contain_text("No request waits for an approval.")


def test_each_link_into_airflow_lands_where_it_says_inside_the_ui(registry, page):
    """Every kind of link from the Models pages into Airflow, clicked inside the UI's frame, lands there.

    The page lives in Airflow's sandboxed iframe (no top navigation); each link is clicked in that
    frame and the UI's own window must show the page the link names: the pipeline's DAG (Models
    list, model page), a blocked run and a version's run, a move request's promote run and the
    Required actions page.
    """
    from playwright.sync_api import expect

    ui = registry.airflow.url
    frame = page.frame_locator("iframe[title=Models]")

    def open_in_the_ui(*clicks: str) -> None:
        """Opens "Models" in the UI's navigation, then follows registry links inside the frame."""
        page.goto(ui + "/")
        page.get_by_role("link", name="Models").click()
        for selector in clicks:
            frame.locator(selector).first.click()

    def lands(selector: str, shows: str) -> str:
        """Clicks a link into Airflow in the frame; asserts the UI's window shows its page."""
        link = frame.locator(selector).first
        href = link.get_attribute("href")
        link.click()
        expect(page).to_have_url(ui + href if href.startswith("/") else href)
        expect(page.get_by_text(shows, exact=False).first).to_be_visible()
        return href

    model_link = f"#models tr[data-model={MODEL}] a[href$='/models/{MODEL}']"
    landed = []
    open_in_the_ui()
    landed.append(lands(f"#models tr[data-model={MODEL}] a[target=_top]", MODEL))
    open_in_the_ui(model_link)
    landed.append(lands("dl a[target=_top]", MODEL))
    blocked = blocked_runs(registry.serving / MODEL)
    assert blocked, "the blocked-run test before this one left no blocked run to link to"
    open_in_the_ui(model_link)
    landed.append(lands("#blocked tr.blocked a[target=_top]", blocked[0]["run_id"]))
    open_in_the_ui(model_link, f"#versions tr[data-version='{NEWER}'] a[href$='/versions/{NEWER}']")
    run_id = read_manifest(registry.serving / MODEL)["versions"][str(NEWER)]["run_id"]
    landed.append(lands("#run-link", run_id))

    for label, link, shows in (
        ("canary", "#promote-run", "savedmodel_promote"),  # canary moves at once: the promote run
        ("stable", "a[href$='/required_actions']", "Required"),  # stable waits for approval
    ):
        other = OLDER if registry.labels().get(label) != OLDER else NEWER  # one the label is not on
        open_in_the_ui(model_link, f"#versions tr[data-version='{other}'] a[href$='/versions/{other}']")
        form = frame.locator("form.move").filter(has=frame.locator(f"input[name=label][value={label}]"))
        form.locator("textarea[name=reason]").fill(f"{label}: links inside the UI")
        form.locator("button[type=submit]").click()
        frame.locator("#requested").wait_for()
        landed.append(lands(link, shows))
    assert [urlsplit(ui + h if h.startswith("/") else h).path.split("/")[1] for h in landed] == [
        *["dags"] * 5,
        "required_actions",
    ]
