"""Airflow's metadata DB engines on SQLite: a transaction that writes takes the write lock when it begins.

The embedded Airflow is several processes (api-server, scheduler, dag-processor, triggerer and
every `airflow` CLI command) on one SQLite file in WAL mode. SQLite lets one connection write at a
time, and a writer that finds the lock taken waits up to the busy timeout, except in one case: a
transaction that has read and then writes. SQLite refuses that read-to-write upgrade at once,
without calling the busy handler, with SQLITE_BUSY ("database is locked") whenever another
connection holds the write lock or has committed since the transaction's snapshot (waiting
could not help: the snapshot is stale, or two upgraders would wait for each other).

Python 3.11's sqlite3 (its legacy transaction control, which SQLAlchemy 2 keeps) begins a
transaction only right before an INSERT, UPDATE or DELETE, so those transactions start by writing
and do wait. A SAVEPOINT outside a transaction, though, begins one of its own, as a reader, and
SQLAlchemy's `Session.begin_nested()` emits one first: `_create_backfill_dag_run_non_partitioned`
in airflow/models/backfill.py (`airflow backfill create`, POST /api/v2/backfills) creates each
run as SAVEPOINT, SELECT the date's run, INSERT INTO dag_run, which fails at once while the
scheduler writes; airflow/assets/manager.py queues asset-triggered runs the same way.

So, on SQLite only:

- sqlite3 begins its transactions with BEGIN IMMEDIATE instead of BEGIN (`isolation_level`);
- a SAVEPOINT that would begin a transaction is preceded by BEGIN IMMEDIATE;
- the busy timeout is a minute instead of sqlite3's 5 s (a configured `timeout` wins): all the
  processes queue for one lock.

A transaction that only reads still takes no lock, as before, so the UI and the API never queue
behind writers. (SQLAlchemy's recipe of BEGIN IMMEDIATE at the start of every transaction would
make reads take the write lock too: a request that reads with one session and writes with
another, as POST /api/v2/backfills does, would wait for itself until the busy timeout.)

One more way to a lock, in the API server: Airflow's `action_logging` dependency (the audit log
row of every mutating REST call) is an `async def` that writes with a sync session, on the event
loop's thread. While it waits for the write lock, the loop is stopped; if the lock holder is a
request of the same API server (a sync endpoint has written and waits for the loop to run its
session's commit), neither can go on until the busy timeout ends: the whole API server hangs for
a minute and the audit write fails. `run_action_logging_in_a_thread` makes that dependency run in
a worker thread (the request body is read on the loop first, as the original expects it), so
the loop keeps serving while it waits.

Airflow loads this through its local-settings hook: `airflow.settings.initialize()` imports
`airflow_local_settings` before `configure_orm()` builds the engines with
`create_metadata_engine` and `create_async_metadata_engine`, the functions Airflow documents for
overriding there. tools/airflow_settings/airflow_local_settings.py hands it the two below; the
Makefile and `tools.local_airflow.airflow_env()` put that folder on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import create_async_engine

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

#: The folder of `airflow_local_settings.py`, the one to put on PYTHONPATH.
LOCAL_SETTINGS_DIR = Path(__file__).resolve().parent / "airflow_settings"
#: The module of Airflow's audit-log dependency, `action_logging`.
ACTION_LOGGING_MODULE = "airflow.api_fastapi.logging.decorators"
#: Seconds a connection waits for SQLite's write lock before it fails with "database is locked".
BUSY_TIMEOUT_S = 60


def is_sqlite(url: str) -> bool:
    """Returns whether a SQLAlchemy URL names a SQLite database (any driver), as Airflow decides it."""
    return url.startswith("sqlite")


def sqlite_connect_args(connect_args: dict[str, Any]) -> dict[str, Any]:
    """Returns sqlite3/aiosqlite connect args: busy timeout (unless given), transactions begun IMMEDIATE."""
    return {"timeout": BUSY_TIMEOUT_S, **connect_args, "isolation_level": "IMMEDIATE"}


def begin_immediate_before_savepoint(connection: Connection, name: str | None) -> None:
    """Begins the transaction with BEGIN IMMEDIATE where a SAVEPOINT would begin it as a reader."""
    if not connection.connection.driver_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_metadata_engine(
    sql_alchemy_conn: str, *, engine_args: dict[str, Any], connect_args: dict[str, Any]
) -> Engine:
    """Returns Airflow's metadata DB engine; on SQLite, its writing transactions begin IMMEDIATE."""
    if not is_sqlite(sql_alchemy_conn):  # as airflow.settings.create_metadata_engine
        return create_engine(sql_alchemy_conn, connect_args=connect_args, **engine_args, future=True)
    engine = create_engine(
        sql_alchemy_conn, connect_args=sqlite_connect_args(connect_args), **engine_args, future=True
    )
    event.listen(engine, "savepoint", begin_immediate_before_savepoint)
    return engine


def create_async_metadata_engine(
    sql_alchemy_conn_async: str, *, connect_args: dict[str, Any], engine_args: dict[str, Any] | None = None
) -> AsyncEngine:
    """Returns Airflow's async metadata DB engine (the API server's); on SQLite, as create_metadata_engine."""
    engine_args = engine_args or {}
    if not is_sqlite(sql_alchemy_conn_async):  # as airflow.settings.create_async_metadata_engine
        return create_async_engine(
            sql_alchemy_conn_async, connect_args=connect_args, **engine_args, future=True
        )
    engine = create_async_engine(
        sql_alchemy_conn_async, connect_args=sqlite_connect_args(connect_args), **engine_args, future=True
    )
    event.listen(engine.sync_engine, "savepoint", begin_immediate_before_savepoint)
    return engine


def in_a_thread(dependency: Callable) -> Callable:
    """Returns an async FastAPI dependency that runs the async `dependency` in a worker thread.

    For a dependency whose only awaits are reads of the request body: the body is read here, on
    the event loop, and the dependency, run to completion on an event loop of its own in the
    thread, finds it cached. FastAPI sees the same parameters (`functools.wraps`).
    """
    import anyio.to_thread

    @functools.wraps(dependency)
    async def run_in_a_thread(**kwargs: Any) -> Any:
        request = kwargs.get("request")
        if request is not None:
            await request.body()  # Starlette keeps it; the dependency's own reads return it
        return await anyio.to_thread.run_sync(lambda: asyncio.run(dependency(**kwargs)))

    return run_in_a_thread


def patch_action_logging(module: ModuleType) -> None:
    """Makes `module.action_logging` (Airflow's) return its dependency wrapped by `in_a_thread`."""
    original = module.action_logging
    if getattr(original, "runs_in_a_thread", False):
        return

    @functools.wraps(original)
    def action_logging(event: str | None = None) -> Callable:
        return in_a_thread(original(event))

    action_logging.runs_in_a_thread = True
    module.action_logging = action_logging


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch` on one module right after it is executed, before anyone imports from it."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch  # this spec's own loader instance
        return spec


def run_action_logging_in_a_thread() -> None:
    """Makes Airflow's `action_logging` dependency run off the event loop, once its module loads.

    The routes apply it when they are imported (`Depends(action_logging())`), so it is patched
    as its module is executed; the settings hook runs long before the API server imports them.
    """
    module = sys.modules.get(ACTION_LOGGING_MODULE)
    if module is not None:
        patch_action_logging(module)
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(ACTION_LOGGING_MODULE, patch_action_logging))
