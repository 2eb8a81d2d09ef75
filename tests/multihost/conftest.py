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


@pytest.fixture(scope="package")
def multihost(tmp_path_factory) -> Iterator[MultiHostCluster]:
    """Yields the running multi-host cluster; at teardown asserts nothing of it is left."""
    if os.geteuid() != 0:
        pytest.skip("multi-host tests make network and mount namespaces: they need root (CI runs as root)")
    with multihost_cluster(tmp_path_factory.mktemp("multihost-logs")) as cluster:
        yield cluster
