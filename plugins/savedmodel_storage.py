"""Airflow's connection lookup for the storage layer (include/ imports no Airflow itself).

Imported by every Airflow-facing module that can touch a bucket (the DAG factory, and through it
every task; the version trigger in the triggerer; the Models page in the api-server): from then
on a pipeline's `storage.connection` / `data.connection` is read as Airflow reads connections,
through its secrets backends and the metastore (in a task, through the execution API).
"""

from __future__ import annotations

from airflow.sdk import BaseHook

from include.storage.connections import set_connection_reader

set_connection_reader(BaseHook.get_connection)
