"""Run options: trigger params merged with defaults, cross-param rules enforced."""

from __future__ import annotations

import datetime as dt

import pytest

from include.errors import RunParamsError
from include.run.options import resolve_run_options

UTC = dt.UTC
LOGICAL = dt.datetime(2026, 10, 12, tzinfo=UTC)


def test_defaults_come_from_the_logical_date():
    """No params: version and data date follow the logical date, no overrides."""
    options = resolve_run_options({}, LOGICAL, None)
    assert options.version == 20261012000000 and options.as_of == dt.date(2026, 10, 12)
    assert options.steps is None and options.learning_rate is None and not options.force_publish


def test_overrides_are_taken():
    """Valid steps, learning rate and version params are passed on."""
    options = resolve_run_options({"steps": 10, "learning_rate": 0.1, "version": 3}, LOGICAL, None)
    assert (options.steps, options.learning_rate, options.version) == (10, 0.1, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": "100"}, "steps"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": 1e9}, "learning_rate"),
        ({"version": "../x"}, "version"),
        ({"force_publish": "yes"}, "force_publish"),
        ({"force_publish": True}, "force_reason"),
        ({"force_publish": True, "force_reason": "   "}, "force_reason"),
        ({"force_reason": "x" * 501}, "force_reason"),
        ({"force_publish": True, "force_reason": "ok\u202egnirts"}, "force_reason"),  # a bidi override
        ({"force_publish": True, "force_reason": "ok\x00"}, "force_reason"),
    ],
)
def test_bad_params_are_refused(params, message):
    """Each bad param, including force without a reason, raises RunParamsError naming it."""
    with pytest.raises(RunParamsError, match=message):
        resolve_run_options(params, LOGICAL, None)


def test_manual_run_without_logical_date_uses_run_after():
    """Airflow 3 manual runs may have no logical date; run-after then dates the run."""
    options = resolve_run_options({}, None, dt.datetime(2026, 11, 2, 9, 15, tzinfo=UTC))
    assert options.version == 20261102091500 and options.as_of == dt.date(2026, 11, 2)
