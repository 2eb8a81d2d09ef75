"""Celery settings for the distributed setup: Airflow's defaults, plus TensorFlow preloaded.

`airflow.env` points `[celery] celery_config_options` here. A Celery worker imports the modules
listed in `imports` in its main process, before it forks its pool processes; with TensorFlow
there, every pool process and every task process it forks inherits the loaded library instead
of paying the ~6 s import per task (the Celery twin of plugins/savedmodel_executor.py).
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": ("tensorflow",)}
