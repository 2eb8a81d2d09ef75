"""Version numbers: derived from dates, validated when given, mapped to safe paths."""

from __future__ import annotations

import datetime as dt

import pytest

from include.errors import RunParamsError
from include.versions import (
    MAX_VERSION,
    export_dir,
    is_version_name,
    parse_version,
    resolve_version,
    run_key,
    run_work_dir,
    version_dir,
    version_from_date,
)

UTC = dt.UTC


def test_version_is_the_utc_logical_date_as_digits():
    """A run dated 2026-10-12 06:30:05 UTC publishes version 20261012063005."""
    assert version_from_date(dt.datetime(2026, 10, 12, 6, 30, 5, tzinfo=UTC)) == 20261012063005


def test_version_converts_other_timezones_to_utc():
    """The same instant gives the same version whatever timezone it is written in."""
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert version_from_date(dt.datetime(2026, 10, 12, 15, 30, 5, tzinfo=tokyo)) == 20261012063005


def test_naive_dates_are_refused():
    """A date without timezone is ambiguous and would give a different version per machine."""
    with pytest.raises(ValueError, match="timezone-aware"):
        version_from_date(dt.datetime(2026, 10, 12))


def test_backfill_dates_give_older_versions_than_today():
    """Versions are ordered like dates, so a backfill never outranks the newest version."""
    past = [version_from_date(dt.datetime(2026, 10, d, tzinfo=UTC)) for d in (10, 11, 12)]
    today = version_from_date(dt.datetime(2026, 11, 26, tzinfo=UTC))
    assert past == sorted(past) and max(past) < today


@pytest.mark.parametrize("value", [1, "7", MAX_VERSION, str(MAX_VERSION)])
def test_parse_version_accepts_positive_int64(value):
    """Positive integers up to 2**63-1 (TF Serving's int64), as int or digit string."""
    assert parse_version(value) == int(value)


@pytest.mark.parametrize(
    "value", [0, -3, MAX_VERSION + 1, True, 1.5, "../x", "1/2", "", " 12", "١٢", "12\0", None, [1]]
)
def test_parse_version_rejects_everything_else(value):
    """Zero, negatives, overflow, bools, floats, traversal and non-ASCII digits are refused."""
    with pytest.raises(RunParamsError, match="version"):
        parse_version(value)


def test_resolve_version_prefers_explicit_then_logical_then_run_after():
    """An explicit param wins; a manual run without logical date uses its run-after time."""
    logical = dt.datetime(2026, 10, 12, tzinfo=UTC)
    run_after = dt.datetime(2026, 11, 1, 8, tzinfo=UTC)
    assert resolve_version(logical, run_after, 42) == 42
    assert resolve_version(logical, run_after) == 20261012000000
    assert resolve_version(None, run_after) == 20261101080000
    with pytest.raises(RunParamsError):
        resolve_version(None, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", True),
        ("20261012000000", True),
        ("0", False),
        ("007", False),
        (".staging-1", False),
        ("manifest.json", False),
    ],
)
def test_is_version_name_matches_what_tf_serving_loads(name, expected):
    """Only canonical positive integers count as versions; staging and manifest names do not."""
    assert is_version_name(name) is expected


def test_run_key_is_safe_and_distinct():
    """Run ids with ':' '+' '/' become safe dir names, and similar ids never collide."""
    a = run_key("manual__2026-10-12T00:00:00+00:00")
    b = run_key("manual__2026-10-12T00:00:00_00:00")
    assert a != b
    assert "/" not in run_key("../../etc/passwd") and ".." not in run_key("../../etc/passwd")


def test_paths_are_built_under_their_roots(tmp_path):
    """Version and export dirs are numeric leaves under the model's directories."""
    assert version_dir(tmp_path, "digits", 5) == tmp_path / "digits" / "5"
    work_dir = run_work_dir(tmp_path, "digits", "backfill__2026-10-12")
    path = export_dir(work_dir, 20261012000000)
    assert path.is_relative_to(tmp_path / "digits" / "runs") and path.name == "20261012000000"
    with pytest.raises(RunParamsError):
        version_dir(tmp_path, "digits", "../../x")
