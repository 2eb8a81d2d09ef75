"""The embedded SQLite never surfaces "database is locked" (tools/sqlite_transactions.py).

The first tests pin the cause and the fix on a bare SQLite file, in milliseconds; the next ones
show the API server that stopped for a minute (an async audit-log dependency that writes) on a
small uvicorn app of the same shape, and that Airflow's real app gets the fix on every route.
The end-to-end test runs a real local Airflow (api-server, scheduler, dag-processor, triggerer; SQLite +
TensorFlowLocalExecutor) and races its scheduler, as users do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tests.e2e.airflow_api import AirflowApi, ApiError
from tests.helpers import make_raw, running_airflow, write_pipeline
from tools import sqlite_transactions
from tools.local_airflow import airflow_env, free_port
from tools.sqlite_transactions import (
    LOCAL_SETTINGS_DIR,
    create_async_metadata_engine,
    create_metadata_engine,
    in_a_thread,
)

LOCKED = "database is locked"
POSTGRES = "postgresql+psycopg2://airflow:airflow@127.0.0.1/airflow"


# --- the cause and the fix, on a bare SQLite file ------------------------------------------------


@pytest.fixture
def db(tmp_path) -> Path:
    """Returns a SQLite file in WAL mode (as Airflow's) with one table `t`."""
    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x INTEGER)")
    return path


def hold_write_lock(path: Path, seconds: float) -> None:
    """Takes the write lock from another connection (the scheduler, say) and releases it after `seconds`."""
    other = sqlite3.connect(path, check_same_thread=False)
    other.execute("INSERT INTO t VALUES (0)")
    threading.Timer(seconds, lambda: (other.commit(), other.close())).start()


def create_run_like_a_backfill(session: Session) -> None:
    """Writes as airflow/models/backfill.py creates a run: SAVEPOINT, SELECT the date, INSERT."""
    with session.begin_nested():
        session.execute(text("SELECT count(*) FROM t")).all()
        session.execute(text("INSERT INTO t VALUES (1)"))
    session.commit()


def test_without_the_hook_a_savepoint_write_fails_at_once_despite_the_busy_timeout(db):
    """Airflow's own engine (60 s busy timeout): the SAVEPOINT began a reader, its INSERT fails in ms."""
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 60})
    hold_write_lock(db, 1.0)
    started = time.monotonic()
    with Session(engine) as session, pytest.raises(OperationalError, match=LOCKED):
        create_run_like_a_backfill(session)
    assert time.monotonic() - started < 0.5  # it never waited for the lock


def test_with_the_hook_a_savepoint_write_waits_for_the_lock(db):
    """Our engine begins that transaction IMMEDIATE, so it waits for the lock and succeeds."""
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={})
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *_: statements.append(sql))
    hold_write_lock(db, 1.0)
    started = time.monotonic()
    with Session(engine) as session:
        create_run_like_a_backfill(session)
    assert time.monotonic() - started >= 0.9
    assert statements[:2] == ["BEGIN IMMEDIATE", "SAVEPOINT sa_savepoint_1"]


def test_with_the_hook_the_async_engine_waits_too(db):
    """The API server's aiosqlite engine gets the same transactions."""
    engine = create_async_metadata_engine(f"sqlite+aiosqlite:///{db}", connect_args={})

    async def create_run() -> None:
        async with AsyncSession(engine) as session:
            async with session.begin_nested():
                await session.execute(text("SELECT count(*) FROM t"))
                await session.execute(text("INSERT INTO t VALUES (1)"))
            await session.commit()
        await engine.dispose()

    hold_write_lock(db, 1.0)
    started = time.monotonic()
    asyncio.run(create_run())
    assert time.monotonic() - started >= 0.9


def test_with_the_hook_reads_take_no_lock(db):
    """A session that has only read holds no lock: another session of the same thread writes at once."""
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={"timeout": 1})
    with Session(engine) as reader, Session(engine) as writer:
        reader.execute(text("SELECT count(*) FROM t")).all()
        writer.execute(text("INSERT INTO t VALUES (1)"))
        writer.commit()
        assert writer.connection().connection.driver_connection.isolation_level == "IMMEDIATE"


def test_other_databases_get_airflows_engine(monkeypatch):
    """A PostgreSQL URL gets the engine Airflow would build: its own connect args, no listener."""
    built = []
    monkeypatch.setattr(sqlite_transactions, "create_engine", lambda *a, **kw: built.append((a, kw)) or kw)
    create_metadata_engine(POSTGRES, engine_args={"pool_size": 5}, connect_args={"sslmode": "disable"})
    assert built == [((POSTGRES,), {"connect_args": {"sslmode": "disable"}, "pool_size": 5, "future": True})]


def test_airflow_env_loads_the_hook_on_sqlite_only(tmp_path, monkeypatch):
    """Every process a LocalAirflow starts imports our airflow_local_settings; a PostgreSQL one does not."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    sqlite_env = airflow_env(tmp_path, free_port())
    assert sqlite_env["PYTHONPATH"].split(":")[0] == str(LOCAL_SETTINGS_DIR)
    assert (LOCAL_SETTINGS_DIR / "airflow_local_settings.py").is_file()
    postgres = airflow_env(tmp_path, free_port(), extra={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": POSTGRES})
    assert "PYTHONPATH" not in postgres


# --- the API server's audit log, an async dependency that writes -----------------------------------


def api_server_like(db: Path, audit_in_a_thread: bool) -> tuple[FastAPI, threading.Event]:
    """Returns an app shaped like Airflow's API server, and an event set once `/write` holds the lock.

    `/write` is a sync endpoint (a threadpool thread) that writes and returns; its session commits
    afterwards, as Airflow's `SessionDep` does, in a step the event loop must schedule. `/audited`
    has an async dependency that writes with a sync session on the loop's thread, as Airflow's
    `action_logging` does.
    """
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={"timeout": 3})
    written = threading.Event()

    def session_dep():
        with Session(engine) as session:
            yield session
            session.commit()

    # A default, not Annotated: this module's annotations are strings, resolved from its globals.
    session_dependency = Depends(session_dep, scope="function")

    async def audit(request: Request, session: Session = session_dependency) -> None:
        await request.body()
        session.execute(text("INSERT INTO t VALUES (2)"))
        session.commit()

    app = FastAPI()

    @app.post("/write")
    def write(session: Session = session_dependency) -> None:
        session.execute(text("INSERT INTO t VALUES (1)"))
        written.set()
        time.sleep(0.3)  # the audited request arrives meanwhile

    @app.post("/audited", dependencies=[Depends(in_a_thread(audit) if audit_in_a_thread else audit)])
    def audited() -> None:
        return None

    return app, written


def race_an_audited_request(app: FastAPI, written: threading.Event) -> tuple[dict[str, int], float]:
    """Serves `app` with uvicorn; sends /write, then /audited while /write holds the lock.

    Returns each path's HTTP status and the seconds until both answered. By path, not in the order
    they came back: both answers leave within milliseconds, and which client thread gets its answer
    first is up to the scheduler.
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.01)
    statuses: dict[str, int] = {}

    def post(path: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                statuses[path] = response.status
        except urllib.error.HTTPError as err:
            statuses[path] = err.code

    try:
        started = time.monotonic()
        writer = threading.Thread(target=post, args=("/write",))
        writer.start()
        assert written.wait(10)
        post("/audited")
        writer.join(30)
        return statuses, time.monotonic() - started
    finally:
        server.should_exit = True
        serving.join(10)


def test_an_async_dependency_that_writes_stops_the_api_server_until_the_busy_timeout(db):
    """Airflow's shape: the audit write blocks the loop, the lock holder cannot commit, 3 s lost, it fails."""
    statuses, seconds = race_an_audited_request(*api_server_like(db, audit_in_a_thread=False))
    assert statuses == {"/audited": 500, "/write": 200}  # the audit failed: "database is locked"
    assert seconds >= 2.9  # the whole busy timeout: nothing else could run


def test_the_audit_dependency_in_a_thread_waits_for_the_lock_and_succeeds(db):
    """`in_a_thread`: the loop lets the lock holder commit, then the audit write goes through."""
    statuses, seconds = race_an_audited_request(*api_server_like(db, audit_in_a_thread=True))
    assert statuses == {"/write": 200, "/audited": 200}  # /write committed, then the audit wrote
    assert seconds < 2.5
    with sqlite3.connect(db) as connection:
        assert sorted(connection.execute("SELECT x FROM t")) == [(1,), (2,)]


def test_every_audited_route_of_the_real_api_server_runs_the_audit_in_a_thread(tmp_path):
    """Airflow's own app, built as `airflow api-server` builds it with our settings: no route left out."""
    script = """if True:
        import json
        from airflow.api_fastapi.app import create_app
        calls = []
        def walk(routes):
            for route in routes:
                dependant = getattr(route, "dependant", None)
                for dependency in getattr(dependant, "dependencies", []):
                    if getattr(dependency.call, "__name__", "") == "log_action":
                        calls.append(dependency.call)
                walk(getattr(getattr(route, "app", None), "routes", []))
        walk(create_app().routes)
        print(json.dumps([len(calls), sum(hasattr(call, "__wrapped__") for call in calls)]))
    """
    env = airflow_env(tmp_path, free_port())
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    audited, in_threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert audited > 20 and in_threads == audited


# --- end to end: 30 commands while the scheduler runs a backfill -----------------------------------

MAIN = "locks_backfilled"
#: Paused DAGs the commands create runs of (their runs stay queued): one per backfill, as Airflow
#: runs one backfill of a DAG at a time and refuses a second one by design.
TARGETS = [f"locks_target_{n}" for n in range(15)]
FIRST, LAST = "2026-10-10", "2026-10-17"  # 8 dates


@dataclass(frozen=True)
class Outcome:
    """One command issued during the backfill: what it was, whether it succeeded, its output tail."""

    command: str
    ok: bool
    seconds: float
    output: str


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, example_data, store):
    """Yields a healthy local Airflow reading the backfilled pipeline and the target pipelines."""
    pipelines = tmp_path_factory.mktemp("pipelines")
    for name in (MAIN, *TARGETS):
        raw = make_raw(store, example_data, name=name, schedule="@daily")
        raw["model"]["name"] = name
        raw["training"]["steps"] = 50  # cheap: the test is about the database, not the model
        raw["quality"] = {"min_accuracy": 0.0, "max_accuracy_drop": None}
        write_pipeline(pipelines, raw)
    with running_airflow(tmp_path_factory.mktemp("airflow-home"), pipelines) as local:
        yield local


def timed(command: str, call) -> Outcome:
    """Runs `call` (it returns ok, output) and returns its outcome."""
    started = time.monotonic()
    ok, output = call()
    return Outcome(command, ok, time.monotonic() - started, output)


def cli(airflow, *args: str) -> Outcome:
    """Runs one `airflow` CLI command; ok when it exits 0."""

    def call():
        done = airflow.cli(*args, check=False, timeout=180)
        return done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    return timed(f"airflow {' '.join(args)}", call)


def rest(api: AirflowApi, path: str, body: dict) -> Outcome:
    """Sends one POST to the REST API; ok when it answers 2xx."""

    def call():
        try:
            return True, str(api.post(path, body))
        except ApiError as err:
            return False, str(err)

    return timed(f"POST {path} {body.get('dag_id', '')}".strip(), call)


@pytest.mark.e2e
def test_backfills_and_triggers_during_a_backfill_never_hit_a_lock(airflow):
    """30 backfill creates and triggers issued while the scheduler runs an 8-date backfill: none fails.

    The scheduler runs an 8-date backfill of `locks_backfilled` (50 training steps, one run at a
    time). Meanwhile 5 rounds of 6 commands run in a row, each creating runs of paused target
    DAGs: a CLI command on one target (`airflow backfill create`, 8 dates, in rounds 1-4;
    `airflow dags trigger` in round 5), POST /api/v2/backfills (8 dates) and POST /dagRuns on two
    more, and POST /dagRuns on the first. Both backfill paths write each run in a SAVEPOINT, the
    case that failed; the triggers write plainly. Every command is one Airflow accepts (a DAG has
    one running backfill at most: a second one is refused by design), so all 30 must succeed,
    none may report "database is locked", and the backfill must still run when round 2 begins
    (else too little was raced). Only 5 are CLI commands: each takes ~10 s of CPU to start,
    and the backfill must outlast them.
    """
    api = AirflowApi(airflow.url)
    for name in (MAIN, *TARGETS):
        api.wait_for_dag(name)
    api.unpause(MAIN)
    dates = ["--from-date", FIRST, "--to-date", LAST]
    first = cli(airflow, "backfill", "create", "--dag-id", MAIN, *dates, "--max-active-runs", "1")
    assert first.ok, first.output

    outcomes: list[Outcome] = []
    round_started: list[dt.datetime] = []
    for n in range(5):
        round_started.append(dt.datetime.now(dt.UTC))
        target, *others = TARGETS[3 * n : 3 * n + 3]
        if n < 4:
            outcomes.append(cli(airflow, "backfill", "create", "--dag-id", target, *dates))
        else:
            outcomes.append(cli(airflow, "dags", "trigger", target))
        for other in others:
            body = {"dag_id": other, "from_date": f"{FIRST}T00:00:00Z", "to_date": f"{LAST}T00:00:00Z"}
            outcomes.append(rest(api, "/api/v2/backfills", body))
            outcomes.append(rest(api, f"/api/v2/dags/{other}/dagRuns", {"logical_date": None}))
        outcomes.append(rest(api, f"/api/v2/dags/{target}/dagRuns", {"logical_date": None}))
    (backfill,) = api.get(f"/api/v2/backfills?dag_id={MAIN}")["backfills"]

    report = "\n".join(
        f"{'ok  ' if o.ok else 'FAIL'} {o.seconds:5.1f}s {o.command}" for o in [first, *outcomes]
    )
    print(report)
    failed = [o for o in outcomes if not o.ok or LOCKED in o.output.lower()]
    assert len(outcomes) == 30
    assert not failed, f"{len(failed)} of 30 failed:\n{report}\n\n" + "\n\n".join(
        f"{o.command}:\n{o.output}" for o in failed
    )
    completed_at = backfill["completed_at"]
    # Rounds 1-2 at least ran against the live backfill (later ones may outlast it: CLI start-up
    # time depends on the machine's load, so the check keeps a margin of three rounds).
    assert completed_at is None or dt.datetime.fromisoformat(completed_at) > round_started[1], (
        f"the backfill was completed at {completed_at}, before round 2 began: too little was raced"
    )

    runs = [r for r in api.wait_for_runs(MAIN, 9, timeout=300) if r["run_type"] == "backfill"]
    assert len(runs) == 8 and all(r["state"] == "success" for r in runs), [
        (r["dag_run_id"], r["state"]) for r in runs
    ]
