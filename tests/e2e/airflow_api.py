"""A small client for the Airflow 3 REST API (`/api/v2`) used by the end-to-end tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tools.local_airflow import DEFAULT_PASSWORD, DEFAULT_USER

FINISHED = {"success", "failed"}


class ApiError(Exception):
    """The API answered with an HTTP error; carries the status and body."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body
        super().__init__(f"HTTP {status}: {body[:2000]}")


class AirflowApi:
    """Authenticated JSON calls against a running API server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        token = self._call(
            "POST", "/auth/token", {"username": DEFAULT_USER, "password": DEFAULT_PASSWORD}, auth=False
        )
        self.token = token["access_token"]

    def _call(self, method: str, path: str, body: dict | None = None, *, auth: bool = True):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310 - http to loopback
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http to loopback
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self._call("GET", path)

    def post(self, path: str, body: dict):
        return self._call("POST", path, body)

    def patch(self, path: str, body: dict):
        return self._call("PATCH", path, body)

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        """Creates a manual run and returns its run id."""
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Waits until the dag-processor has registered a DAG."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except ApiError as err:
                if err.status != 404:
                    raise
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s")

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 300) -> list[dict]:
        """Waits until `count` runs of a DAG exist and all are finished; returns them."""
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if len(runs) >= count and all(r["state"] in FINISHED for r in runs):
                return runs
            time.sleep(3)
        raise TimeoutError(
            f"{dag_id}: runs not finished after {timeout:.0f}s: "
            f"{[(r['dag_run_id'], r['state']) for r in runs]}"
        )

    def wait_for_scheduled_run(self, dag_id: str, timeout: float = 300) -> dict:
        """Waits for the run that unpausing a scheduled DAG creates; returns it once finished.

        That run is the latest interval (catchup is off). A test that spans midnight UTC sees an
        @daily DAG tick once more, so the earliest scheduled run is the one unpausing made.
        """
        runs = self.wait_for_runs(dag_id, 1, timeout)
        return min((r for r in runs if r["run_type"] == "scheduled"), key=lambda r: r["logical_date"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict:
        """Waits until one run is finished and returns it."""
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED:
                return run
            time.sleep(2)
        raise TimeoutError(f"{dag_id}/{run_id} not finished after {timeout:.0f}s: {run.get('state')}")

    def wait_for_backfills(self, dag_id: str, timeout: float = 300) -> list[dict]:
        """Waits until every backfill of a DAG is marked completed (one may run at a time)."""
        deadline = time.monotonic() + timeout
        backfills: list[dict] = []
        while time.monotonic() < deadline:
            backfills = self.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
            if all(b["completed_at"] for b in backfills):
                return backfills
            time.sleep(2)
        raise TimeoutError(f"{dag_id}: backfills not completed after {timeout:.0f}s: {backfills}")

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Returns the states of a run's task instances, for assertion messages."""
        return ", ".join(f"{t['task_id']}={t['state']}" for t in self.task_instances(dag_id, run_id))
