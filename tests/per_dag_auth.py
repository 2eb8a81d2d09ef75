"""An auth manager with rights per DAG, for the tests: Airflow's simple auth manager, less some DAGs.

The simple auth manager grants by role only; FAB and Keycloak can also deny one user one DAG.
This stands in for them (neither runs here without its own services): `SAVEDMODEL_TEST_DENIED`
lists `user:dag_id` pairs, comma-separated, whose user may not trigger (POST a run of) that DAG.
Everything else is the simple auth manager's answer. Set as `[core] auth_manager` in the e2e test
of the Models page (tests/e2e/test_registry_ui.py).
"""

from __future__ import annotations

import os

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


def denied() -> set[tuple[str, str]]:
    """Returns the (user, dag_id) pairs whose user may not trigger the DAG."""
    pairs = (item.strip().partition(":") for item in os.environ.get("SAVEDMODEL_TEST_DENIED", "").split(","))
    return {(user, dag_id) for user, _, dag_id in pairs if user and dag_id}


class PerDagAuthManager(SimpleAuthManager):
    """The simple auth manager, except that the users of SAVEDMODEL_TEST_DENIED may not trigger their DAGs."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        """Denies a run of a DAG listed for the user; otherwise the simple auth manager decides."""
        triggers = method == "POST" and access_entity in (DagAccessEntity.RUN, None)
        if triggers and details is not None and (user.get_name(), details.id) in denied():
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
