"""
## SavedModel training pipelines (Airflow DAG factory)

One DAG per YAML file in `include/pipelines/`:
`train → validate_signatures → export_savedmodel → wait_for_version → publish_version`.

- **train** writes the run record (the pipeline YAML as read, with its SHA-256; options,
  version, paths) into the run's work dir, reads the data partitions dated before the run's
  logical date, trains, and writes a checkpoint and held-out metrics. Later tasks read the
  record, never the YAML.
- **validate_signatures** rebuilds the serving graph, builds the signatures the YAML declares,
  checks them against the contract and the served version, runs them on held-out rows (the
  reference outputs) and applies the quality gate.
- **export_savedmodel** writes the SavedModel with TensorFlow's `SavedModelBuilder`.
- **wait_for_version** waits until the version dir holds `saved_model.pb` and `variables/`.
- **publish_version** loads the exported SavedModel, checks every signature and warmup request
  against the reference outputs, then renames it into `<serving_root>/<model>/<version>`
  atomically.

The version is the logical date as `YYYYMMDDHHMMSS` (UTC), unless the trigger form names one.
Invalid YAML files show up as an import error of `dags/pipeline_config_errors.py`.
"""

from __future__ import annotations

from include.config import load_all_pipelines
from plugins.savedmodel_dag_factory import build_pipeline_dag

_configs, _ = load_all_pipelines()
for _config in _configs:
    globals()[_config.dag_id] = build_pipeline_dag(_config, doc_md=__doc__)
