"""Dev and deployment tooling: the local Airflow harness, Celery settings, example data."""
