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
from collections.abc import Iterator
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


@contextlib.contextmanager
def postgres_server(password: str) -> Iterator[str]:
    """Runs a fresh PostgreSQL cluster with database and user `airflow`; yields `user:pw@host:port/db`.

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
        server = subprocess.Popen(
            [*as_owner, str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port), *options],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_port(port, server, "postgres", log)
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
            yield f"airflow:{password}@127.0.0.1:{port}/airflow"
        finally:
            _stop(server, signal.SIGINT)  # "fast" shutdown: ends sessions, then exits
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Runs a Redis server on loopback without persistence; yields its `redis://` URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server not installed (apt-get install redis-server; .ci/run does)")
    base = Path(tempfile.mkdtemp(prefix="savedmodel-redis-"))
    port, log = free_port(), base / "redis.log"
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(base)]
    server = subprocess.Popen(
        [executable, "--port", str(port), *options],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, server, "redis-server", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(server)
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
