"""A local Airflow: api-server, scheduler, dag-processor and triggerer on SQLite + LocalExecutor
(the subclass in plugins/savedmodel_executor.py, which imports TensorFlow once for all tasks).

Used by `make airflow` (foreground, Ctrl-C stops it) and by the end-to-end tests (temporary
home, free ports). Every component gets one environment, so they agree on the database, the
JWT secret, the ports and the execution API URL. Each component runs in its own process group;
`stop()` ends the groups, so task processes forked by the executor go too.

The same class runs the distributed setup natively (tests/e2e/test_celery.py): given the
settings of `airflow.env` (CeleryExecutor, shared with docker-compose.yml), a PostgreSQL URL, a
Redis broker and `workers`, it also starts `airflow celery worker` processes, each under its own
hostname (a UTS namespace, as a container would have), so task instances show which worker ran them.

Usage: python -m tools.local_airflow [--port 8080]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from include.config import PROJECT_ROOT
from tools.sqlite_transactions import LOCAL_SETTINGS_DIR, is_sqlite

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: LocalExecutor, importing TensorFlow once in the scheduler instead of once per task process.
EXECUTOR = "plugins.savedmodel_executor.TensorFlowLocalExecutor"
#: Airflow settings of the distributed setup, shared by docker-compose.yml (env_file) and the
#: native Celery test: one source of truth.
SETTINGS_FILE = PROJECT_ROOT / "airflow.env"
HEALTH_PATH = "/api/v2/monitor/health"
DEFAULT_USER = "admin"
DEFAULT_PASSWORD = "admin"  # noqa: S105 - the documented local, loopback-only login
#: A second local login: four-eyes approval never lets the admin approve the admin's own `stable`
#: request (plugins/savedmodel_promotion.py), so someone else must be there to answer it.
APPROVER_USER = APPROVER_PASSWORD = "approver"  # noqa: S105 - local, loopback-only, like admin
#: The local logins: user -> (simple auth manager role, password).
LOCAL_USERS = {DEFAULT_USER: ("admin", DEFAULT_PASSWORD), APPROVER_USER: ("user", APPROVER_PASSWORD)}


def free_port() -> int:
    """Returns a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    """Returns the KEY=VALUE settings of an env file (Compose's `env_file` format, no quoting)."""
    settings = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        settings[key] = value
    return settings


@dataclass(frozen=True)
class CeleryWorker:
    """One `airflow celery worker`: its hostname and the queues it consumes."""

    name: str
    queues: tuple[str, ...]
    concurrency: int | None = None  # None: [celery] worker_concurrency


def airflow_env(
    home: Path, port: int, *, extra: dict[str, str] | None = None, fast: bool = False
) -> dict[str, str]:
    """Returns the environment shared by every component of a local Airflow in `home`."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{user}:{role}" for user, (role, _) in LOCAL_USERS.items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # Tasks report to the execution API; it must follow the API server's port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if fast:  # tests: notice new files and runs within seconds instead of minutes
        env.update(
            {
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            }
        )
    extra = extra or {}
    env.update(extra)
    if is_sqlite(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]):
        # Every process on one SQLite file: Airflow imports our airflow_local_settings from
        # PYTHONPATH, so transactions that write take the lock at BEGIN and wait for it instead of
        # failing with "database is locked" (tools/sqlite_transactions.py says why).
        paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
        if str(LOCAL_SETTINGS_DIR) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(LOCAL_SETTINGS_DIR), *paths])
    return env


def wait_healthy(
    processes: dict[str, subprocess.Popen],
    log: Callable[[str], Path],
    health: Callable[[], dict],
    workers_ready: Callable[[], bool],
    timeout: float,
) -> None:
    """Waits until the health document says every component is healthy and `workers_ready()`.

    Raises RuntimeError naming the log of a component that exited meanwhile, TimeoutError with
    the last answer (or error) once `timeout` s passed.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}; see {log(name)}")
        try:
            last = health()
            if all(part.get("status") == "healthy" for part in last.values()) and workers_ready():
                return
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = err
        time.sleep(1)
    raise TimeoutError(f"Airflow not healthy after {timeout:.0f}s: {last}")


@dataclass
class LocalAirflow:
    """A running (or startable) set of Airflow components sharing one home and one port."""

    home: Path
    port: int = 8080
    extra_env: dict[str, str] = field(default_factory=dict)
    fast: bool = False
    training_pool_slots: int = 1
    workers: tuple[CeleryWorker, ...] = ()
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: How each component was started ({name: (command, env)}): `restart_exited` reuses it.
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.env = airflow_env(self.home, self.port, extra=self.extra_env, fast=self.fast)
        # One JWT secret for all components, or tasks cannot authenticate to the execution API.
        self.env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs an `airflow` CLI command against this installation and returns the result."""
        done = subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def prepare(self) -> None:
        """Migrates the DB, writes the known local logins and creates the training pool."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        passwords = self.home / "passwords.json"
        known = json.loads(passwords.read_text()) if passwords.exists() else {}
        missing = {user: password for user, (_, password) in LOCAL_USERS.items() if user not in known}
        if missing:  # a home made before a login was added gets it too; passwords set are kept
            passwords.write_text(json.dumps({**known, **missing}))
        self.cli("db", "migrate")
        if self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
            # Write-ahead logging lets readers (the API server, the UI) proceed while a writer
            # holds the lock; the mode is stored in the database file itself.
            with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=60)) as db:
                db.execute("PRAGMA journal_mode=WAL")
        self.cli(
            "pools",
            "set",
            "training",
            str(self.training_pool_slots),
            "Caps concurrent train tasks (see README: operations)",
        )

    def start(self, timeout: float = 180) -> None:
        """Starts every component and returns once the health endpoint reports all healthy."""
        self.prepare()
        for name in COMPONENTS:
            self._spawn(name, ["airflow", name], self.env)
        for worker in self.workers:
            command = ["airflow", "celery", "worker", "--queues", ",".join(worker.queues)]
            command += ["--celery-hostname", f"{worker.name}@%h"]
            if worker.concurrency is not None:
                command += ["--concurrency", str(worker.concurrency)]
            # Each worker serves its task logs on a port of its own, as on separate hosts.
            env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            self._spawn(worker.name, own_hostname(worker.name, command), env)
        self.wait_healthy(timeout)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.log(name), "ab")  # closed when the process ends
        self.commands[name] = (command, env)
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def health(self) -> dict:
        """Returns the API server's health document (raises if it does not answer)."""
        with urllib.request.urlopen(self.url + HEALTH_PATH, timeout=5) as response:  # noqa: S310
            return json.load(response)

    def wait_healthy(self, timeout: float) -> None:
        """Waits until the DB, scheduler, triggerer and dag-processor are healthy, and workers ready."""
        wait_healthy(self.processes, self.log, self.health, self._workers_ready, timeout)

    def _workers_ready(self) -> bool:
        """Whether every Celery worker has logged that it is ready to take tasks."""
        for worker in self.workers:
            log = self.log(worker.name)
            if f"{worker.name}@{worker.name} ready." not in log.read_text(errors="replace"):
                return False
        return True

    def log(self, name: str) -> Path:
        """Returns the log file of one component."""
        return self.home / "logs" / f"{name}.log"

    def stop(self, grace: float = 20) -> None:
        """Stops every component and the processes they started (SIGTERM, then SIGKILL)."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group: stragglers forked by the executor
            process.wait()
        self.processes.clear()

    def kill(self, name: str) -> set[int]:
        """SIGKILLs one component and every process it started, as a container kill would; returns their pids.

        The component's process group is not all of it: Airflow's task supervisor puts each task
        process in a process group of its own, so the whole tree of descendants is killed too.
        """
        with self._lock:
            process = self.processes[name]
            killed = kill_process_tree(process.pid)
            process.wait()
            return killed

    def restart_exited(self) -> list[str]:
        """Starts every component that has exited again (compose's `restart: always`); returns their names."""
        with self._lock:
            exited = [name for name, process in self.processes.items() if process.poll() is not None]
            for name in exited:
                self._spawn(name, *self.commands[name])
            return exited

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def kill_process_tree(pid: int) -> set[int]:
    """SIGKILLs a process, its process group and all its descendants; returns the pids it found.

    Everything is stopped (SIGSTOP) first, so nothing forks while the tree is walked.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGSTOP)
    found: set[int] = set()
    while True:
        try:
            root = psutil.Process(pid)
            tree = {pid} | {child.pid for child in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            tree = set()
        if tree <= found:
            break
        for stopped in tree - found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGSTOP)
        found |= tree
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for victim in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return found


def own_hostname(hostname: str, command: list[str]) -> list[str]:
    """Returns `command` wrapped to run in a new UTS namespace whose hostname is `hostname`.

    Several Celery workers on one machine otherwise all report the machine's hostname in their
    task instances. Needs root, or unprivileged user namespaces (then `--map-root-user`).
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("`unshare` (util-linux) is needed to give each local Celery worker its hostname")
    namespaces = ["--uts"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--uts"]
    return [unshare, *namespaces, "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *command]


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a local Airflow for this project.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--home", default=os.environ.get("AIRFLOW_HOME", str(PROJECT_ROOT / ".airflow")))
    args = parser.parse_args()
    airflow = LocalAirflow(Path(args.home), args.port)
    stop = False

    def request_stop(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        airflow.start()
        print(
            f"ready: {airflow.url}  (login {DEFAULT_USER} / {DEFAULT_PASSWORD}, approvals also "
            f"{APPROVER_USER} / {APPROVER_PASSWORD}; logs in {airflow.home}/logs)",
            flush=True,
        )
        while not stop:
            for name, process in airflow.processes.items():
                if process.poll() is not None:
                    print(
                        f"airflow {name} exited with {process.returncode}; see {airflow.log(name)}",
                        flush=True,
                    )
                    return 1
            time.sleep(1)
    finally:
        airflow.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
