"""PostgreSQL and Redis from Debian's packages, started on loopback for the native Celery test.

The same services docker-compose.yml runs in containers; here they run as plain processes on free
ports in throwaway directories, and are always stopped and removed. `.ci/run` installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.local_airflow import free_port


def postgres_bin() -> Path | None:
    """Returns the newest installed PostgreSQL server's bin dir (Debian layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not listening on 127.0.0.1:{port} after {timeout:.0f}s")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class NativeServer:
    """One server process on loopback that can be stopped and started again on its port and data dir.

    `restart()` is what a container restart does to the compose service: the same command, port
    and data dir; whatever the server does not persist (Redis here keeps nothing) is gone.
    """

    name: str
    command: list[str]
    port: int
    log: Path
    url: str = ""
    stop_signal: int = signal.SIGTERM
    #: Beyond listening: whether the server accepts work (None: listening is enough).
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        """Returns the pid of the running server process."""
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    def start(self, timeout: float = 60) -> None:
        """Starts the server and returns once it listens (and is ready)."""
        self.process = subprocess.Popen(
            self.command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        _wait_for_port(self.port, self.process, self.name, self.log, timeout)
        deadline = time.monotonic() + timeout
        while self.ready is not None and not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} listens on {self.port}, not ready after {timeout:.0f}s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stops the server with its stop signal (SIGKILL after 30 s) and waits for it."""
        if self.process is not None:
            _stop(self.process, self.stop_signal)

    def restart(self, down_for: float = 0.0) -> int:
        """Stops the server, stays down `down_for` seconds, starts it again; returns its new pid."""
        self.stop()
        time.sleep(down_for)
        self.start()
        return self.pid


@contextlib.contextmanager
def postgres_server(password: str) -> Iterator[str]:
    """Runs a fresh PostgreSQL cluster (see `postgres_service`); yields `user:pw@host:port/db`."""
    with postgres_service(password) as server:
        yield server.url


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Runs a Redis server on loopback without persistence (see `redis_service`); yields its URL."""
    with redis_service() as server:
        yield server.url


@contextlib.contextmanager
def postgres_service(password: str) -> Iterator[NativeServer]:
    """Runs a fresh PostgreSQL cluster with database and user `airflow`; yields it.

    Its `url` is `user:pw@host:port/db`; `restart()` is a fast shutdown and a start on the same
    data dir and port.

    Password (SCRAM) authentication over TCP, as in the compose file. PostgreSQL refuses to run as
    root, so under root the cluster belongs to Debian's `postgres` user.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server not installed (apt-get install postgresql; .ci/run does)")
    # Not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="savedmodel-postgres-"))
    as_owner: list[str] = []
    try:
        pwfile = base / "password"
        pwfile.write_text(password)
        if os.geteuid() == 0:
            as_owner = ["runuser", "-u", "postgres", "--"]
            for path in (base, pwfile):
                shutil.chown(path, "postgres")
        initdb = [str(bindir / "initdb"), "-D", str(base / "data"), "-U", "airflow", "--pwfile", str(pwfile)]
        subprocess.run(
            [*as_owner, *initdb, "--auth=scram-sha-256", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        port, log = free_port(), base / "postgres.log"
        # fsync off: a test database, thrown away at the end (never do this with real data).
        options = ["-k", str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        server = NativeServer(
            "postgres",
            [*as_owner, str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port), *options],
            port,
            log,
            url=f"airflow:{password}@127.0.0.1:{port}/airflow",
            stop_signal=signal.SIGINT,  # "fast" shutdown: ends sessions, then exits
            ready=lambda: subprocess.run(isready, check=False).returncode == 0,
        )
        try:
            server.start()
            env = {**os.environ, "PGPASSWORD": password}
            createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow"]
            for attempt in range(50):  # listening precedes accepting logins by a moment
                created = subprocess.run(
                    [*createdb, "airflow"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if created.returncode == 0:
                    break
                if attempt == 49:
                    raise RuntimeError(f"createdb failed: {created.stderr}")
                time.sleep(0.2)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def redis_service() -> Iterator[NativeServer]:
    """Runs a Redis server on loopback without persistence; yields it (its `redis://` URL in `url`)."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server not installed (apt-get install redis-server; .ci/run does)")
    base = Path(tempfile.mkdtemp(prefix="savedmodel-redis-"))
    port, log = free_port(), base / "redis.log"
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(base)]
    server = NativeServer(
        "redis-server",
        [executable, "--port", str(port), *options],
        port,
        log,
        url=f"redis://127.0.0.1:{port}/0",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def processes_with_env(key: str, value: str) -> dict[int, str]:
    """Returns {pid: command line} of every live process whose environment has key=value."""
    needle = f"{key}={value}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[int(proc.name)] = command
    return found


def has_tensorflow_loaded(pid: int) -> bool:
    """Whether TensorFlow's native library is mapped into a process."""
    return "_pywrap_tensorflow_internal" in Path(f"/proc/{pid}/maps").read_text()
