"""Pipeline configs: the YAML schema (pydantic), loading with errors in our words, the catalog.

It imports no TensorFlow and no Airflow, so the DAG files can call it on every parse.
"""

from include.config.catalog import find_pipeline, iter_pipeline_files, load_all_pipelines
from include.config.loading import load_pipeline_config, parse_pipeline_config, parse_pipeline_yaml
from include.config.schema import (
    DEFAULT_PIPELINES_DIR,
    MODEL_TENSORS,
    PROJECT_ROOT,
    DataChecksConfig,
    DataConfig,
    Expectation,
    FeatureSpec,
    LabelConfig,
    ModelConfig,
    NotificationsConfig,
    PipelineConfig,
    QualityConfig,
    ServingConfig,
    SignatureSpec,
    SliceSpec,
    StorageConfig,
    TensorSpec,
    TrainingConfig,
)

__all__ = [
    "DEFAULT_PIPELINES_DIR",
    "MODEL_TENSORS",
    "PROJECT_ROOT",
    "DataChecksConfig",
    "DataConfig",
    "Expectation",
    "FeatureSpec",
    "LabelConfig",
    "ModelConfig",
    "NotificationsConfig",
    "PipelineConfig",
    "QualityConfig",
    "ServingConfig",
    "SignatureSpec",
    "SliceSpec",
    "StorageConfig",
    "TensorSpec",
    "TrainingConfig",
    "find_pipeline",
    "iter_pipeline_files",
    "load_all_pipelines",
    "load_pipeline_config",
    "parse_pipeline_config",
    "parse_pipeline_yaml",
]
