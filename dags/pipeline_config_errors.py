"""Reports every invalid pipeline YAML as one Airflow import error (this file defines no DAG).

The DAG factory in `savedmodel_pipelines.py` builds DAGs from the valid files only, so one
broken YAML never hides the other pipelines. Airflow lists this module's error with
`airflow dags list-import-errors` and in the UI.
"""

from __future__ import annotations

from include.config import load_all_pipelines
from include.errors import InvalidPipelinesError

_, _errors = load_all_pipelines()
if _errors:
    raise InvalidPipelinesError(_errors)
