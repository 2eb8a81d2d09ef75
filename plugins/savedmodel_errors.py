"""How the project's errors become Airflow outcomes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.sdk.exceptions import AirflowFailException

from include.errors import PipelineError


@contextlib.contextmanager
def fail_fast_on_permanent_errors() -> Iterator[None]:
    """Turns permanent PipelineErrors into AirflowFailException (no retry); others pass through."""
    try:
        yield
    except PipelineError as err:
        if err.permanent:
            raise AirflowFailException(str(err)) from err
        raise
