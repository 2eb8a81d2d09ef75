"""docker-compose.yml: valid, healthchecked, one shared configuration (airflow.env), nothing exposed,
secrets shared from .env, and an airflow-init that prepares the named volumes the others use."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT, find_pipeline, load_pipeline_config
from include.registry.serving_config import MODELS_CONFIG_FILE
from tests.helpers import EXAMPLE_YAML, record_offsets
from tools.example_data import EXAMPLE_DAYS, EXAMPLE_PIPELINES
from tools.local_airflow import SETTINGS_FILE, read_env_file

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
needs_docker_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="Debian's docker-compose (installed by .ci/run)"
)
WORKERS = ["airflow-worker", "airflow-worker-training"]
AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    *WORKERS,
]
#: The .env variables docker-compose.yml requires, each with a value no other one has.
SECRETS = {
    "POSTGRES_PASSWORD": "postgres-password",
    "AIRFLOW_FERNET_KEY": "fernet-key",
    "AIRFLOW_API_SECRET_KEY": "api-secret-key",
    "AIRFLOW_JWT_SECRET": "jwt-secret",
    "AIRFLOW_ADMIN_PASSWORD": "admin-password",
}
#: Airflow settings that must be equal in every container, and the .env variable each comes from.
SHARED_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
}
DB_URLS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND")
MODEL_STORE = "/opt/airflow/project/build"
#: The project dir in the containers: the code's bind mounts and the Dockerfile's WORKDIR.
CONTAINER_PROJECT = "/opt/airflow/project"
#: The records of each example pipeline's data set (scikit-learn's digits and diabetes).
EXAMPLE_SIZES = {"digits_softmax": 1797, "diabetes_keras": 442}


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
    assert f"python -m include.registry.cli models-config {in_container}" in init


def test_secrets_come_from_env_and_ports_stay_on_loopback(compose):
    """No secret value is in the files, and every published port binds 127.0.0.1."""
    env = compose["services"]["airflow-apiserver"]["environment"]
    for key in SHARED_SECRETS:
        assert env[key].startswith("${") and ":?" in env[key]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert "${POSTGRES_PASSWORD:?" in env[key]
    settings = read_env_file(SETTINGS_FILE)
    assert not [key for key in settings if any(word in key for word in ("KEY", "SECRET", "PASSWORD"))]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def compose_config(compose_file: Path, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Returns `docker-compose config` of the file with exactly these variables: no .env, no shell's."""
    shell = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "AIRFLOW_UID"}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env_file:  # a developer's .env stays out
        return subprocess.run(
            [
                *("docker-compose", "--env-file", no_env_file.name),
                *("--project-directory", str(PROJECT_ROOT), "-f", str(compose_file), "config"),
            ],
            env={**shell, **variables},
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture(scope="module")
def resolved() -> dict:
    """docker-compose.yml as `docker-compose config` resolves it with SECRETS and default AIRFLOW_UID."""
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose (installed by .ci/run)")
    result = compose_config(COMPOSE, SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@needs_docker_compose
def test_docker_compose_accepts_the_file():
    """`docker-compose config -q` validates the file, and refuses to run without the secrets."""
    assert compose_config(COMPOSE, SECRETS).returncode == 0
    missing = compose_config(COMPOSE, {})
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD in .env" in missing.stderr


def test_shared_secrets_have_no_default_in_the_compose_file():
    """Every use of a secret variable is `${VAR:?...}`: required and non-empty, never a baked-in default."""
    uses = re.findall(r"(?<!\$)\$\{(\w+)([^}]*)\}", COMPOSE.read_text())
    secret_uses = [(name, rest) for name, rest in uses if name in SECRETS]
    assert {name for name, _ in secret_uses} == set(SECRETS)
    assert [use for use in secret_uses if not use[1].startswith(":?")] == []


@needs_docker_compose
@pytest.mark.parametrize("variable", sorted(SECRETS))
def test_an_empty_secret_is_refused(variable):
    """`docker-compose config` refuses to resolve the file while one secret is empty, and names it."""
    result = compose_config(COMPOSE, {**SECRETS, variable: ""})
    assert result.returncode != 0 and f"set {variable} in .env" in result.stderr, result.stderr


def test_shared_secrets_are_identical_in_every_airflow_service(resolved):
    """Fernet key, API secret key, JWT secret and DB password: each service has its .env value."""
    services = resolved["services"]
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        env = services[name]["environment"]
        for setting, variable in SHARED_SECRETS.items():
            assert env.get(setting) == SECRETS[variable], (name, setting)
        for setting in DB_URLS:
            assert f"://airflow:{SECRETS['POSTGRES_PASSWORD']}@postgres/airflow" in env[setting], (
                name,
                setting,
            )
        # No Redis password: Redis publishes no port, only the compose network reaches it.
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert "ports" not in services["redis"]


def test_env_example_lists_every_variable_the_compose_file_reads():
    """.env.example names each variable docker-compose.yml reads, and holds no secret value."""
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))  # $$ is a literal $
    example = read_env_file(ENV_EXAMPLE)
    assert set(example) == variables == {"AIRFLOW_UID", *SECRETS}
    assert {key: value for key, value in example.items() if key in SECRETS and value} == {}


def test_built_services_state_their_platform(compose):
    """tensorflow-cpu has Linux wheels for x86_64 only: every built service says linux/amd64."""
    built = [name for name, service in compose["services"].items() if "build" in service]
    assert set(built) == {"airflow-init", *AIRFLOW_SERVICES}
    assert {compose["services"][name].get("platform") for name in built} == {"linux/amd64"}


def test_dockerignore_keeps_secrets_outputs_and_caches_out_of_the_build_context():
    """Everything git ignores, .git and .env are out of the context; what the Dockerfile copies is in."""
    ignored = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()]
    ignored = {line.removeprefix("**/").rstrip("/") for line in ignored if line and not line.startswith("#")}
    git_ignored = {
        line.strip().rstrip("/") for line in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    }
    assert git_ignored - {""} | {".git", ".env"} <= ignored
    copied = [
        word
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ")
        for word in line.split()[1:-1]
    ]
    assert copied and not [
        (path, pattern) for path in copied for pattern in ignored if fnmatch.fnmatch(path, pattern)
    ]


# --- airflow-init, emulated --------------------------------------------------------------------

#: The base image's airflow user and its group (apache/airflow's Dockerfile: `adduser --uid 50000 --gid 0`).
AIRFLOW_USER = (50000, 0)
#: What the emulation takes from the base image: AIRFLOW_HOME and its logs/, the airflow user's,
#: group-writable. The rest of the image comes from our Dockerfile.
BASE_IMAGE_DIRS = {"/opt/airflow": (*AIRFLOW_USER, 0o775), "/opt/airflow/logs": (*AIRFLOW_USER, 0o775)}
BASE_IMAGE_ENV = {"AIRFLOW_HOME": "/opt/airflow"}
#: Every container path of the stack lies under this dir; the emulation moves it under a temp dir.
CONTAINER_TREE = "/opt/airflow"


def image_dirs(dockerfile: Path) -> dict[str, tuple[int, int, int]]:
    """Returns {container dir: (uid, gid, mode)} of the dirs the Dockerfile's `install -d` creates."""
    dirs = dict(BASE_IMAGE_DIRS)
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        if not line.startswith("RUN "):
            continue
        for command in line.removeprefix("RUN ").split("&&"):
            words = shlex.split(command)
            if words[:2] != ["install", "-d"]:
                continue
            options = dict(zip(words[2:8:2], words[3:8:2], strict=True))
            assert set(options) == {"-o", "-g", "-m"}, f"expected install -d -o UID -g GID -m MODE: {command}"
            owner = (int(options["-o"]), int(options["-g"]), int(options["-m"], 8))
            dirs.update(dict.fromkeys(words[8:], owner))
    return dirs


def image_setting(dockerfile: Path, instruction: str) -> list[str]:
    """Returns the arguments of every `instruction` line of the Dockerfile (ENV, WORKDIR, ...)."""
    return [
        line.split(None, 1)[1]
        for line in dockerfile.read_text().splitlines()
        if line.startswith(f"{instruction} ")
    ]


def user_ids(user: str) -> tuple[int, int]:
    """Returns (uid, gid) of a compose `user:` value, which must be numeric here."""
    uid, gid = user.split(":")
    return int(uid), int(gid)


def named_volumes(resolved: dict, service: str) -> dict[str, tuple[str, str]]:
    """Returns {volume name: (container path, mode)} of the named volumes a service mounts."""
    mounts = (entry.split(":") for entry in resolved["services"][service].get("volumes", []))
    return {m[0]: (m[1], m[2] if len(m) > 2 else "rw") for m in mounts if m[0] in resolved["volumes"]}


class EmulatedContainer:
    """One container of the stack on this machine: its /opt/airflow tree under `root`, as Docker builds it.

    The image's dirs come from the Dockerfile (`install -d`, plus BASE_IMAGE_DIRS); each named volume
    is a fresh dir at its mount path, root-owned 0755 the way Docker creates one, or with the owner
    and mode of the image's dir at that path, which Docker copies into a new, empty volume; each bind
    mount is a root-owned copy of its source (read-only to the container user, as `:ro` is), not
    a symlink: code that finds its files from its own path (include.config.PROJECT_ROOT) must
    find the container's paths, as it does behind a bind mount.
    """

    def __init__(self, root: Path, resolved: dict, service: str, dockerfile: Path) -> None:
        self.root = root
        dirs = image_dirs(dockerfile)
        for path, (uid, gid, mode) in sorted(dirs.items()):
            self._make_dir(path, uid, gid, mode)
        self.workdir = self.host(image_setting(dockerfile, "WORKDIR")[-1])
        self.workdir.mkdir(parents=True, exist_ok=True)
        image_env = dict(setting.split("=", 1) for setting in image_setting(dockerfile, "ENV"))
        self.image_env = {key: self.rewrite(value) for key, value in {**BASE_IMAGE_ENV, **image_env}.items()}
        for entry in resolved["services"][service]["volumes"]:
            source, target = entry.split(":")[:2]
            if source in resolved["volumes"]:
                self._make_dir(target, *dirs.get(target, (0, 0, 0o755)))
                assert not any(self.host(target).iterdir()), f"{target}: a fresh volume is empty"
            else:
                assert entry.endswith(":ro"), f"{entry}: the emulation copies read-only bind mounts only"
                self.host(target).parent.mkdir(parents=True, exist_ok=True)
                if Path(source).is_dir():
                    shutil.copytree(source, self.host(target), ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, self.host(target))

    def host(self, container_path: str) -> Path:
        """Returns where a container path lies on this machine."""
        return Path(f"{self.root}{container_path}")

    def rewrite(self, text: str) -> str:
        """Returns the text with its container paths moved to this machine's."""
        return text.replace(CONTAINER_TREE, str(self.host(CONTAINER_TREE)))

    def _make_dir(self, path: str, uid: int, gid: int, mode: int) -> None:
        self.host(path).mkdir(parents=True, exist_ok=True)
        os.chown(self.host(path), uid, gid)
        self.host(path).chmod(mode)


AIRFLOW_STUB = """#!/bin/bash
# Emulated `airflow` CLI: reports who ran it and what; writes airflow.cfg where the real CLI writes it.
# (db migrate and pools set change only the PostgreSQL database.)
set -eu
echo "airflow-stub uid=$(id -u) gid=$(id -g): $*"
[ -e "$AIRFLOW_HOME/airflow.cfg" ] || : > "$AIRFLOW_HOME/airflow.cfg"
"""
PYTHON_SHIM = """#!/bin/bash
# The image's python: the system's, of this venv's version, with this venv's packages (the venv's
# own interpreter may lie where the container user cannot reach). Every script runs as it is.
export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site_packages}"
exec {python} "$@"
"""
#: An interpreter every uid can run, of this venv's Python version.
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def run_airflow_init(container: EmulatedContainer, resolved: dict) -> subprocess.CompletedProcess[str]:
    """Runs airflow-init's resolved entrypoint and command natively, as its `user:`, in the container."""
    service = resolved["services"]["airflow-init"]
    stubs = container.root / "emulation-stubs"
    stubs.mkdir()
    shim = PYTHON_SHIM.format(python=SYSTEM_PYTHON, site_packages=sysconfig.get_paths()["purelib"])
    for name, text in {"airflow": AIRFLOW_STUB, "python": shim}.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    entrypoint = service["entrypoint"]
    argv = [*(shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint), *service["command"]]
    env = {
        **container.image_env,
        **{key: container.rewrite(str(value)) for key, value in service["environment"].items()},
        "PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",  # the code is a read-only bind mount in the container
    }
    uid, gid = user_ids(service["user"])
    return subprocess.run(
        # `docker-compose config` writes a literal $ as $$, as in its input.
        [container.rewrite(arg.replace("$$", "$")) for arg in argv],
        cwd=container.workdir,
        env=env,
        user=uid,
        group=gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


WRITE_PROBE = """import json, os, sys
failed = []
for path in json.loads(sys.argv[1]):
    try:
        if os.path.isdir(path):
            probe = os.path.join(path, ".write-probe")
            open(probe, "w").close()
            os.remove(probe)
        else:
            open(path, "a").close()
    except OSError as error:
        failed.append(f"{path}: {error}")
print(json.dumps(failed))
"""


def unwritable_as(user: str, paths: list[Path]) -> list[str]:
    """Returns the paths a process of this `user:` (uid:gid, no other group) cannot write, and why."""
    uid, gid = user_ids(user)
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", WRITE_PROBE, json.dumps([str(p) for p in paths])],
        user=uid,
        group=gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture
def container_root() -> Iterator[Path]:
    """A temp dir every uid can enter, standing for a container's root; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("emulating the containers' users (setuid, chown) needs root")
    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} stands for the image's python (Debian's, as docker-compose's)")
    root = Path(tempfile.mkdtemp(prefix="compose-init-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def test_the_image_hands_every_named_volume_to_the_airflow_user(compose):
    """The Dockerfile pre-creates each Airflow volume's mount point, writable by group 0 (any AIRFLOW_UID)."""
    dirs = image_dirs(DOCKERFILE)
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        for entry in compose["services"][name]["volumes"]:
            source, target = entry.split(":")[:2]
            if source in compose["volumes"]:
                assert target in dirs, f"{name}: {source} mounts at {target}, which the image lacks"
                uid, gid, mode = dirs[target]
                assert (uid, gid) == AIRFLOW_USER and mode & 0o770 == 0o770, (target, uid, gid, oct(mode))


def test_airflow_init_prepares_the_volumes_every_airflow_service_writes(resolved, container_root):
    """airflow-init, run as its container user on fresh volumes, leaves them writable to every service.

    Real: `docker-compose config`'s resolved airflow-init (entrypoint, command with the .env values,
    environment, `user:`), run by bash as that uid:gid with no other group; its `install`, `setpriv`,
    the admin password file, the project's scripts as the command calls them (scripts/generate_data.py
    writing both example pipelines' data with TensorFlow, `include.registry.cli models-config`); the
    image's dirs and ENV from the Dockerfile (`install -d`, ENV, WORKDIR); each service's `user:` in
    the write checks.
    Emulated: the container's file system (its /opt/airflow tree under a temp dir, container paths
    rewritten into it; named volumes as fresh root-owned 0755 dirs, or with the owner and mode of the
    image's dir at the mount path, which Docker copies into a new volume; bind mounts as read-only
    copies); the base image (BASE_IMAGE_DIRS, BASE_IMAGE_ENV; the system's python with this venv's
    packages); and only `airflow db migrate` / `pools set` (a stub that writes
    AIRFLOW_HOME/airflow.cfg, their only file, and reports its uid: they change only PostgreSQL).
    """
    container = EmulatedContainer(container_root, resolved, "airflow-init", DOCKERFILE)
    result = run_airflow_init(container, resolved)
    assert result.returncode == 0, f"airflow-init exited {result.returncode}:\n{result.stdout}{result.stderr}"

    services = resolved["services"]
    service_users = {services[name]["user"] for name in AIRFLOW_SERVICES}
    assert len(service_users) == 1, service_users
    uid, gid = user_ids(service_users.pop())
    # Every step but the volume hand-over ran as the services' user, so they own all it wrote.
    assert f"airflow-stub uid={uid} gid={gid}: db migrate" in result.stdout
    assert f"airflow-stub uid={uid} gid={gid}: pools set training 1" in result.stdout
    passwords = container.host(
        services["airflow-init"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    )
    assert json.loads(passwords.read_text()) == {"admin": SECRETS["AIRFLOW_ADMIN_PASSWORD"]}
    assert container.host(f"{MODEL_STORE}/models/{MODELS_CONFIG_FILE}").is_file()
    # Each example pipeline's data, whole, where its YAML's data.location resolves in the container.
    training_data = named_volumes(resolved, "airflow-init")["training-data"][0]
    assert set(EXAMPLE_SIZES) == set(EXAMPLE_PIPELINES)
    for name, count in EXAMPLE_SIZES.items():
        config = find_pipeline(name, DEFAULT_PIPELINES_DIR)
        location = Path(CONTAINER_PROJECT) / config.data.location.relative_to(PROJECT_ROOT)
        assert location.is_relative_to(training_data), (name, location)
        files = sorted(container.host(str(location)).glob("dt=*/part-00000.tfrecord"))
        assert len(files) == EXAMPLE_DAYS, (name, files)
        assert sum(len(record_offsets(f)) for f in files) == count, name
    for name in AIRFLOW_SERVICES:
        writable = [target for target, mode in named_volumes(resolved, name).values() if mode == "rw"]
        written = [
            Path(d, f)
            for t in writable
            for d, dirs, files in os.walk(container.host(t))
            for f in [*dirs, *files]
        ]
        assert unwritable_as(services[name]["user"], [*map(container.host, writable), *written]) == [], name
        assert {(p.stat().st_uid, p.stat().st_gid) for p in written} <= {(uid, gid)}, name
