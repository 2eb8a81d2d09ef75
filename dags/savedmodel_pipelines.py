"""
## SavedModel training pipelines (Airflow DAG factory)

One DAG per YAML file in `include/pipelines/`:
`train → validate_signatures → export_savedmodel → wait_for_version → publish_version`.

- **train** reads the data partitions dated before the run's logical date, trains, and writes a
  checkpoint and held-out metrics into the run's work dir.
- **validate_signatures** rebuilds the serving graph, checks its signatures against the YAML
  contract, smoke-runs them and applies the quality gate.
- **export_savedmodel** writes the SavedModel with TensorFlow's `SavedModelBuilder`.
- **wait_for_version** waits until the version dir holds `saved_model.pb` and `variables/`.
- **publish_version** renames the version into `<serving_root>/<model>/<version>` atomically.

The version is the logical date as `YYYYMMDDHHMMSS` (UTC), unless the trigger form names one.
Invalid YAML files show up as an import error of `dags/pipeline_config_errors.py`.
"""

from __future__ import annotations

from include.config import load_all_pipelines
from plugins.savedmodel_dag_factory import build_pipeline_dag

_configs, _ = load_all_pipelines()
for _config in _configs:
    globals()[_config.dag_id] = build_pipeline_dag(_config, doc_md=__doc__)
