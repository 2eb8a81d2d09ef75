"""docker-compose.yml: valid, healthchecked, one shared configuration (airflow.env), nothing exposed."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from include.config import PROJECT_ROOT, load_pipeline_config
from include.serving_config import MODELS_CONFIG_FILE
from tests.helpers import EXAMPLE_YAML
from tools.local_airflow import SETTINGS_FILE, read_env_file

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
WORKERS = ["airflow-worker", "airflow-worker-training"]
AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    *WORKERS,
]
SECRETS = {
    "POSTGRES_PASSWORD": "p",
    "AIRFLOW_FERNET_KEY": "f",
    "AIRFLOW_JWT_SECRET": "j",
    "AIRFLOW_ADMIN_PASSWORD": "a",
}
MODEL_STORE = "/opt/airflow/project/build"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the <<: merge keys like Compose does


def worker_queues(service: dict) -> list[str]:
    args = service["command"].split()
    return args[args.index("--queues") + 1].split(",")


def test_services_and_healthchecks(compose):
    """Postgres, Redis, an init job, the Airflow components and two workers, each healthchecked."""
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "airflow-init", "tensorflow-serving", *AIRFLOW_SERVICES}
    for name in ["postgres", "redis", "tensorflow-serving", *AIRFLOW_SERVICES]:
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in WORKERS:  # tasks call the execution API as soon as they start
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
        assert "container_name" not in services[name], "a fixed name breaks --scale"


def test_every_airflow_service_shares_one_configuration(compose):
    """Same image, settings file, environment and volumes everywhere; the model store at one path."""
    services = compose["services"]
    reference = services["airflow-apiserver"]
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        assert services[name]["env_file"] == ["airflow.env"], name
        assert services[name]["environment"] == reference["environment"], name
        assert services[name]["volumes"] == reference["volumes"], name
        assert services[name]["image"] == reference["image"], name
        assert f"model-store:{MODEL_STORE}" in services[name]["volumes"]
    env = reference["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/project/dags"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    settings = read_env_file(SETTINGS_FILE)
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # One source of truth: compose adds only addresses, paths and secrets, never a shared setting.
    assert not set(settings) & set(env), set(settings) & set(env)


def test_the_celery_config_airflow_env_names_is_importable_and_mounted(compose):
    """The module of `[celery] celery_config_options` imports here and is mounted in every container."""
    settings = read_env_file(SETTINGS_FILE)
    module, _, attribute = settings["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"].rpartition(".")
    assert getattr(importlib.import_module(module), attribute)["imports"] == ("tensorflow",)
    package = module.split(".")[0]
    volumes = compose["services"]["airflow-worker"]["volumes"]
    assert f"./{package}:/opt/airflow/project/{package}:ro" in volumes


def test_workers_consume_the_queues_the_pipelines_use(compose):
    """The default worker takes Airflow's default queue; the training worker the example's train queue."""
    services = compose["services"]
    example = load_pipeline_config(EXAMPLE_YAML)
    default_queue = read_env_file(SETTINGS_FILE)["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert worker_queues(services["airflow-worker"]) == [default_queue]
    assert worker_queues(services["airflow-worker-training"]) == [example.operations.training_queue]


def test_serving_profile_reads_the_pipelines_models_config(compose):
    """TF Serving (profile `serving`) reads models.config where the example pipeline writes it."""
    serving = compose["services"]["tensorflow-serving"]
    assert serving["profiles"] == ["serving"]
    assert serving["volumes"] == [f"model-store:{MODEL_STORE}:ro"]
    example = load_pipeline_config(EXAMPLE_YAML)
    in_container = Path(MODEL_STORE) / example.storage.serving_root.relative_to(PROJECT_ROOT / "build")
    assert f"--model_config_file={in_container / MODELS_CONFIG_FILE}" in serving["command"]
    init = compose["services"]["airflow-init"]["command"][-1]
    assert f"python -m include.registry_cli models-config {in_container}" in init


def test_secrets_come_from_env_and_ports_stay_on_loopback(compose):
    """No secret value is in the files, and every published port binds 127.0.0.1."""
    env = compose["services"]["airflow-apiserver"]["environment"]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert env[key].startswith("${") and ":?" in env[key]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert "${POSTGRES_PASSWORD:?" in env[key]
    settings = read_env_file(SETTINGS_FILE)
    assert not [key for key in settings if any(word in key for word in ("KEY", "SECRET", "PASSWORD"))]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose (installed by .ci/run)"
)
def test_docker_compose_accepts_the_file():
    """`docker-compose config -q` validates the file, and refuses to run without the secrets."""
    clean_env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    ok = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        env={**clean_env, **SECRETS},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        env=clean_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD in .env" in missing.stderr
