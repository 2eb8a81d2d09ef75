"""Training data: which partitions a run sees, the held-out split and the fingerprint."""

from __future__ import annotations

import datetime as dt

import pytest

from include.config import DataConfig
from include.data import load_dataset, partitions_as_of
from include.errors import NoDataError
from tools.example_data import EXAMPLE_FIRST_DAY


def data_config(location, **changes) -> DataConfig:
    return DataConfig(location=location, **changes)


def test_a_run_sees_only_partitions_before_its_date(example_data):
    """The partition of the run's own day is still being written, so it is left out."""
    chosen = partitions_as_of(data_config(example_data), dt.date(2026, 10, 4))
    assert [p.name for p in chosen] == ["dt=2026-10-01", "dt=2026-10-02", "dt=2026-10-03"]


def test_window_days_limits_history(example_data):
    """window_days=2 keeps only the two days before the run's date."""
    chosen = partitions_as_of(data_config(example_data, window_days=2), dt.date(2026, 10, 10))
    assert [p.name for p in chosen] == ["dt=2026-10-08", "dt=2026-10-09"]


def test_no_data_before_the_first_partition_is_a_clear_error(example_data):
    """A run dated on or before the first day fails with NoDataError naming the date."""
    with pytest.raises(NoDataError, match="before 2026-10-01"):
        load_dataset(data_config(example_data), EXAMPLE_FIRST_DAY, 64)


def test_missing_location_is_a_clear_error(tmp_path):
    """A data location that does not exist is reported as such."""
    with pytest.raises(NoDataError, match="does not exist"):
        load_dataset(data_config(tmp_path / "nowhere"), dt.date(2026, 11, 1), 64)


def test_split_is_deterministic_and_held_out_examples_stay_held_out(example_data):
    """Eval membership depends only on the example, so later dates keep earlier eval examples."""
    early = load_dataset(data_config(example_data), dt.date(2026, 10, 11), 64)
    again = load_dataset(data_config(example_data), dt.date(2026, 10, 11), 64)
    later = load_dataset(data_config(example_data), dt.date(2026, 11, 1), 64)
    assert early.fingerprint == again.fingerprint
    assert early.fingerprint != later.fingerprint
    assert len(early.eval_y) < len(later.eval_y) and len(early.train_y) < len(later.train_y)
    assert len(later.train_y) + len(later.eval_y) == 1797
    assert 0.15 < len(later.eval_y) / 1797 < 0.25
    assert set(map(bytes, early.eval_x)) <= set(map(bytes, later.eval_x))
