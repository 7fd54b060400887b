"""The hot-path histogram: Prometheus' `le` buckets, cumulative snapshots, sum and count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.stats import EXEC_SECONDS, LATENESS_SECONDS, Histogram


def test_a_value_equal_to_a_bound_falls_in_that_bound_bucket() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.1, 1.0, 10.0):
        histogram.observe(value)
    assert histogram.counts == [1, 1, 1, 0]
    assert histogram.snapshot().cumulative == (1, 2, 3, 3)


def test_values_between_bounds_and_above_the_last_one() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.0, 0.05, 0.100001, 0.9, 5.0, 10.5, 1e9):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert histogram.counts == [2, 2, 1, 2]
    assert snapshot.cumulative == (2, 4, 5, 7)
    assert snapshot.count == histogram.count == 7
    assert snapshot.sum == pytest.approx(0.05 + 0.100001 + 0.9 + 5.0 + 10.5 + 1e9)
    assert snapshot.bounds == (0.1, 1.0, 10.0)


def test_an_empty_histogram_snapshots_zeros() -> None:
    snapshot = Histogram(LATENESS_SECONDS).snapshot()
    assert snapshot.cumulative == (0,) * (len(LATENESS_SECONDS) + 1)
    assert (snapshot.sum, snapshot.count) == (0.0, 0)


def test_a_snapshot_does_not_move_with_later_observations() -> None:
    histogram = Histogram((1.0,))
    histogram.observe(0.5)
    before = histogram.snapshot()
    histogram.observe(2.0)
    assert before.cumulative == (1, 1)
    assert histogram.snapshot().cumulative == (1, 2)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_be_ascending_and_distinct(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ascending and distinct"):
        Histogram(bounds)


def test_the_bound_sets_are_the_issue_s() -> None:
    assert EXEC_SECONDS[0] == LATENESS_SECONDS[0] == 0.0001
    assert EXEC_SECONDS[-1] == 60.0 and LATENESS_SECONDS[-1] == 1.0
    assert len(EXEC_SECONDS) == 18 and len(LATENESS_SECONDS) == 13
    assert EXEC_SECONDS[: len(LATENESS_SECONDS)] == LATENESS_SECONDS


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200))
def test_cumulative_counts_match_a_direct_count(values: list[float]) -> None:
    histogram = Histogram(EXEC_SECONDS)
    for value in values:
        histogram.observe(value)
    snapshot = histogram.snapshot()
    expected = [sum(value <= bound for value in values) for bound in EXEC_SECONDS]
    assert list(snapshot.cumulative) == [*expected, len(values)]
    assert snapshot.count == len(values)
    assert snapshot.sum == pytest.approx(sum(values))
