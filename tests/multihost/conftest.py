"""The multi-host cluster fixture: five hosts (network + mount namespaces), object stores, Airflow on Celery.

Package-scoped: every test module under tests/multihost shares one cluster (about a minute to
start on 2 cores), and it is stopped, with nothing of it left, when the package's last test ends.
See tests/multihost/services.py (`MultiHostCluster`) for what the fixture holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.multihost.services import MultiHostCluster, multihost_cluster

#: What the fault tests need of every host: failpoints in the host's own /tmp (include/failpoints.py),
#: and a killed worker's task noticed after 30 s without a heartbeat instead of 300 (a live task's
#: supervisor heartbeats every 5 s).
FAILPOINTS_DIR = "/tmp/failpoints"
CLUSTER_ENV = {
    "SAVEDMODEL_FAILPOINTS": FAILPOINTS_DIR,
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
}


@pytest.fixture(scope="package")
def multihost(tmp_path_factory) -> Iterator[MultiHostCluster]:
    """Yields the running multi-host cluster; at teardown asserts nothing of it is left."""
    if os.geteuid() != 0:
        pytest.skip("multi-host tests make network and mount namespaces: they need root (CI runs as root)")
    with multihost_cluster(tmp_path_factory.mktemp("multihost-logs"), extra_env=CLUSTER_ENV) as cluster:
        yield cluster
