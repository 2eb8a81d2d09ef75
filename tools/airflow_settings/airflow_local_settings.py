"""Airflow's local settings for this project: `airflow.settings` imports this module at start.

This folder alone goes on PYTHONPATH (the Makefile, tools.local_airflow.airflow_env), so Airflow
finds the module by the name it imports; what it sets up is in tools/sqlite_transactions.py.
"""

from __future__ import annotations

from airflow import settings

from tools import sqlite_transactions

# airflow.settings replaces its own functions named in __all__, and the API server's audit log
# runs off its event loop, on SQLite only: other databases (PostgreSQL with Celery) keep Airflow's
# engines and its audit log untouched.
if sqlite_transactions.is_sqlite(settings.SQL_ALCHEMY_CONN):
    create_metadata_engine = sqlite_transactions.create_metadata_engine
    create_async_metadata_engine = sqlite_transactions.create_async_metadata_engine
    sqlite_transactions.run_action_logging_in_a_thread()
    __all__ = ["create_async_metadata_engine", "create_metadata_engine"]
else:
    __all__ = []
