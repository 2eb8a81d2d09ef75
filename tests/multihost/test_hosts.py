"""The multi-host harness itself: hosts share no files, reach each other, can be cut off; the services work.

On the cluster of conftest.py (tests/multihost/services.py): files written under build/, data/
and /tmp stay on their host; PostgreSQL, Redis and both object stores answer from another host;
a host whose link is down cannot connect (at once) and is reachable again after link_up; moto and
fake-gcs-server honour the conditional writes a registry needs; the Airflow components are
healthy and both Celery workers answer a ping. Then the harness's own cleanup: a run killed
mid-way is removed by the next one, and a closed Network leaves nothing.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from include.config import PROJECT_ROOT
from tests.multihost.hosts import Network, leftovers
from tests.multihost.services import GCS_PORT, WORKER_LOG_PORT, can_connect, gcs_filesystem, s3_client

pytestmark = [pytest.mark.e2e, pytest.mark.multihost]

PRIVATE = (PROJECT_ROOT / "build", PROJECT_ROOT / "data", Path("/tmp"))


def _contents(host, paths: list[Path]) -> dict[str, str | None]:
    """Returns {path: text or None when absent} as `host` sees them."""
    script = "import json, sys, pathlib; ps = map(pathlib.Path, sys.argv[1:])\n"
    script += "print(json.dumps({str(p): p.read_text() if p.exists() else None for p in ps}))"
    return json.loads(host.run([sys.executable, "-c", script, *map(str, paths)]).stdout)


def _write(host, paths: list[Path], text: str) -> None:
    host.run(["sh", "-c", 'text=$1; shift; for p; do printf %s "$text" > "$p"; done', "write", text, *paths])


def test_hosts_share_no_files(multihost):
    """What one host writes under build/, data/ and /tmp, no other host and not the real machine sees."""
    a, b = multihost.hosts["worker-default"], multihost.hosts["worker-training"]
    paths = [directory / f"multihost-isolation-{secrets.token_hex(4)}" for directory in PRIVATE]
    expected = dict.fromkeys(map(str, paths))
    try:
        _write(a, paths, "host a")
        assert _contents(b, paths) == expected
        assert {str(p): p.read_text() if p.exists() else None for p in paths} == expected
        for path in paths:  # the real machine's own files, at the same paths
            path.write_text("real machine")
        _write(b, paths, "host b")
        assert _contents(a, paths) == dict.fromkeys(map(str, paths), "host a")
        assert _contents(b, paths) == dict.fromkeys(map(str, paths), "host b")
        assert {str(p): p.read_text() for p in paths} == dict.fromkeys(map(str, paths), "real machine")
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    # Each host's Airflow home is its own too: the api-server's login file is on the airflow host only.
    assert (
        multihost.run("airflow", ["test", "-e", "/tmp/airflow/passwords.json"], check=False).returncode == 0
    )
    assert multihost.run(
        "worker-default", ["test", "-e", "/tmp/airflow/passwords.json"], check=False
    ).returncode


PROBE = textwrap.dedent(
    """
    import json, sys, urllib.request
    import boto3, psycopg2, redis
    args = json.loads(sys.argv[1])
    with psycopg2.connect("postgresql://" + args["db"], connect_timeout=5) as db:
        db.cursor().execute("SELECT 1")
    redis.Redis.from_url(args["redis"], socket_timeout=5).ping()
    with urllib.request.urlopen(args["gcs"] + "/storage/v1/b/" + args["gcs_bucket"], timeout=5) as r:
        gcs = json.load(r)["name"]
    s3 = boto3.client("s3", endpoint_url=args["s3"], region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    print(json.dumps({"gcs": gcs, "s3": buckets, "hostname": __import__("socket").gethostname()}))
    """
)


def test_services_answer_from_another_host(multihost):
    """PostgreSQL and Redis (db host), fake-gcs-server and moto (storage host) answer a worker host."""
    args = {
        "db": multihost.postgres.url,
        "redis": multihost.redis.url,
        "gcs": multihost.gcs.url,
        "gcs_bucket": multihost.gcs.bucket,
        "s3": multihost.s3.url,
    }
    done = multihost.run("worker-default", [sys.executable, "-c", PROBE, json.dumps(args)])
    assert json.loads(done.stdout) == {
        "gcs": multihost.gcs.bucket,
        "s3": [multihost.s3.bucket],
        "hostname": "worker-default",
    }


def test_object_stores_honour_conditional_writes(multihost):
    """moto: PutObject with If-None-Match: * and If-Match; fake-gcs-server: ifGenerationMatch=0 uploads.

    A model registry on an object store claims a version with a create-only write; these are
    the answers it relies on (412 when the condition fails).
    """
    s3, bucket, key = s3_client(multihost.s3.url), multihost.s3.bucket, f"cond/{secrets.token_hex(4)}"
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=key, Body=b"two", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    second = s3.put_object(Bucket=bucket, Key=key, Body=b"three", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key=key, Body=b"four", IfMatch=first["ETag"])
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert second["ETag"] != first["ETag"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"three"

    gcs, path = gcs_filesystem(multihost.gcs.url), f"{multihost.gcs.bucket}/cond/{secrets.token_hex(4)}"
    gcs.pipe(path, b"one", mode="create")  # a multipart upload with ifGenerationMatch=0
    with pytest.raises(FileExistsError):
        gcs.pipe(path, b"two", mode="create")
    assert gcs.cat(path) == b"one"


def test_airflow_components_and_workers_are_up(multihost):
    """The api-server reports DB, scheduler, dag-processor, triggerer healthy; both workers answer a ping."""
    airflow = multihost.airflow
    health = airflow.health()
    assert {
        part: health[part]["status"] for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")
    } == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "dag_processor": "healthy",
        "triggerer": "healthy",
    }
    # Each runs on its own host: the components on `airflow`, the workers on theirs.
    for name, host in airflow.hosts().items():
        assert airflow.processes[name].pid in host.pids(), (name, host)
    assert multihost.api.get("/api/v2/pools/training")["slots"] == 1
    replies = airflow.ping_workers()
    assert replies == {
        "worker-default@worker-default": {"ok": "pong"},
        "worker-training@worker-training": {"ok": "pong"},
    }


PROBE_CONNECT = textwrap.dedent(
    """
    import json, socket, sys, time
    started = time.monotonic()
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
        error = None
    except OSError as err:
        error = err.strerror or str(err)
    print(json.dumps({"error": error, "seconds": time.monotonic() - started}))
    """
)


def test_link_down_cuts_a_host_off(multihost):
    """A host whose link is down cannot connect (fails at once) nor be reached; link_up restores both."""
    host, storage = multihost.hosts["worker-training"], multihost.hosts["storage"]

    def connect() -> dict:
        return json.loads(host.run(["python3", "-c", PROBE_CONNECT, storage.address, str(GCS_PORT)]).stdout)

    assert connect()["error"] is None
    host.link_down()
    try:
        cut = connect()
        assert cut["error"] == "Network is unreachable" and cut["seconds"] < 1, cut
        assert not can_connect(host.address, WORKER_LOG_PORT, timeout=1)  # nothing reaches it either
    finally:
        host.link_up()
    assert connect()["error"] is None
    assert can_connect(host.address, WORKER_LOG_PORT)
    # Its Celery worker kept its broker connection through the short cut: it answers again.
    started = time.monotonic()
    while "worker-training@worker-training" not in (replies := multihost.airflow.ping_workers(timeout=5)):
        assert time.monotonic() < started + 60, replies
    print(f"worker-training answers a ping {time.monotonic() - started:.1f}s after link_up")


ORPHAN = textwrap.dedent(
    """
    import sys, time
    from tests.multihost.hosts import Network
    network = Network(sys.argv[1]).start()
    network.add_host("orphan").popen(["sleep", "1000"], log="sleep")
    print(network.run, flush=True)
    time.sleep(1000)
    """
)


def test_stale_runs_are_removed_and_a_closed_network_leaves_nothing(multihost, tmp_path):
    """A run killed with its hosts still up is removed by the next Network, which leaves nothing at exit.

    The live cluster's run is not touched: its lock is held.
    """
    orphan = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path / "orphan-logs")],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert orphan.stdout is not None
    stale = orphan.stdout.readline().strip()
    orphan.send_signal(signal.SIGKILL)
    orphan.wait()
    left = leftovers(stale)
    assert left["netns"] == [f"smh-{stale}-orphan"] and len(left["processes"]) == 2, left  # anchor, sleep

    with Network(tmp_path / "logs") as network:
        assert stale in network.stale_removed and multihost.network.run not in network.stale_removed
        assert not any(leftovers(stale).values())
        network.add_host("probe").popen(["sleep", "1000"], log="sleep")
        run = network.run
        assert leftovers(run)["processes"]
    assert not any(leftovers(run).values()), leftovers(run)
    assert leftovers(multihost.network.run)["netns"]  # the cluster is still there
