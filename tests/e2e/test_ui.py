"""The Airflow UI in headless Chromium: log in, open the trigger form, change a param, trigger.

Needs Debian's chromium (`/usr/bin/chromium`, installed by `.ci/run`) and the `playwright`
package; Playwright drives that browser, it downloads none of its own. The screenshot of the
filled-in form is kept in `test-artifacts/`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from include.config import PROJECT_ROOT
from include.registry.store import read_manifest
from tests.e2e.airflow_api import AirflowApi
from tests.helpers import make_raw, running_airflow, write_pipeline
from tools.local_airflow import APPROVER_USER, DEFAULT_PASSWORD, DEFAULT_USER, LOCAL_USERS

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture(scope="module")
def ui_airflow(tmp_path_factory, example_data):
    """Yields a local Airflow serving one manual-only pipeline, and the model store root."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (see .ci/run)")
    store, pipelines = tmp_path_factory.mktemp("ui-store"), tmp_path_factory.mktemp("ui-pipelines")
    raw = make_raw(store, example_data, name="ui_digits", schedule=None)
    raw["model"]["name"] = "ui_digits"
    write_pipeline(pipelines, raw)
    with running_airflow(tmp_path_factory.mktemp("ui-home"), pipelines) as local:
        AirflowApi(local.url).wait_for_dag("ui_digits")
        yield local, store


def test_trigger_form_runs_with_a_changed_param(ui_airflow):
    """A user logs in, sees the params in the trigger form, sets steps=300, triggers; it publishes."""
    from playwright.sync_api import expect, sync_playwright

    airflow, store = ui_airflow
    api = AirflowApi(airflow.url)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(airflow.url + "/")
            page.locator("input[name=username]").fill(DEFAULT_USER)
            page.locator("input[name=password]").fill(DEFAULT_PASSWORD)
            page.locator("button[type=submit]").click()
            page.wait_for_url(airflow.url + "/")

            page.goto(airflow.url + "/dags/ui_digits")
            page.get_by_test_id("trigger-dag-button").click()
            dialog = page.get_by_role("dialog")
            for label in ("Training steps", "Learning rate", "Version", "Force publish", "Force reason"):
                expect(dialog.get_by_text(label, exact=False).first).to_be_visible()
            steps = dialog.get_by_label("Training steps")
            steps.fill("300")
            steps.blur()
            submit = dialog.get_by_test_id("trigger-dag-submit")
            expect(submit).to_be_enabled()
            page.screenshot(path=str(ARTIFACTS / "ui-trigger-form.png"), full_page=True)
            # The form lazily loads its JSON editor; a click while it loads can be swallowed
            # (seen in CI: no request sent). Like a user, click again if nothing was sent.
            posts = []

            def record_trigger(request) -> None:
                if request.method == "POST" and "/dagRuns" in request.url:
                    posts.append(request)

            page.on("request", record_trigger)
            for _ in range(3):
                page.wait_for_load_state("networkidle")
                submit.click()
                for _ in range(20):
                    if posts:
                        break
                    page.wait_for_timeout(500)
                if posts:
                    break
            assert len(posts) == 1, f"{len(posts)} trigger requests sent"
            # The dialog closes once the API created the run; give a loaded 2-core machine time.
            expect(dialog).to_be_hidden(timeout=30_000)
        finally:
            browser.close()

    (run,) = api.wait_for_runs("ui_digits", 1)
    assert run["state"] == "success", api.failure_report("ui_digits", run["dag_run_id"])
    assert run["conf"]["steps"] == 300
    (entry,) = read_manifest(store / "serving" / "ui_digits")["versions"].values()
    assert entry["hyperparameters"]["steps"] == 300 and entry["run_id"] == run["dag_run_id"]


def test_the_local_logins_are_an_admin_and_an_approver(ui_airflow):
    """`make airflow` has two logins, so a `stable` request of the admin has someone else to answer it."""
    import http.client
    import json
    from urllib.parse import urlsplit

    airflow, _ = ui_airflow
    address = urlsplit(airflow.url)

    def token_status(username: str, password: str) -> int:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            body = json.dumps({"username": username, "password": password})
            connection.request("POST", "/auth/token", body, {"Content-Type": "application/json"})
            return connection.getresponse().status
        finally:
            connection.close()

    for username, (_, password) in LOCAL_USERS.items():
        assert token_status(username, password) in (200, 201), username
    assert token_status(APPROVER_USER, "not-the-password") == 401
    assert {role for role, _ in LOCAL_USERS.values()} == {"admin", "user"}
    known = json.loads((airflow.home / "passwords.json").read_text())
    assert known == {user: password for user, (_, password) in LOCAL_USERS.items()}
