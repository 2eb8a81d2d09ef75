"""docker-compose.yml: valid, healthchecked, one shared Airflow configuration, nothing exposed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from include.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
SECRETS = {
    "POSTGRES_PASSWORD": "p",
    "AIRFLOW_FERNET_KEY": "f",
    "AIRFLOW_JWT_SECRET": "j",
    "AIRFLOW_ADMIN_PASSWORD": "a",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the <<: merge keys like Compose does


def test_services_and_healthchecks(compose):
    """Postgres, an init job and the four Airflow components, each long-running one healthchecked."""
    services = compose["services"]
    assert set(services) == {"postgres", "airflow-init", *AIRFLOW_SERVICES}
    for name in ["postgres", *AIRFLOW_SERVICES]:
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"


def test_every_airflow_service_shares_one_configuration(compose):
    """Same image, environment and volumes everywhere; the model store at the same path in each."""
    services = compose["services"]
    reference = services["airflow-apiserver"]
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        assert services[name]["environment"] == reference["environment"], name
        assert services[name]["volumes"] == reference["volumes"], name
        assert services[name]["image"] == reference["image"], name
        assert "model-store:/opt/airflow/project/build" in services[name]["volumes"]
    env = reference["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/project/dags"


def test_secrets_come_from_env_and_ports_stay_on_loopback(compose):
    """No secret value is in the file, and every published port binds 127.0.0.1."""
    env = compose["services"]["airflow-apiserver"]["environment"]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert env[key].startswith("${") and ":?" in env[key]
    assert "${POSTGRES_PASSWORD:?" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
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
