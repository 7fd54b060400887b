"""The worker state table, and backoff: pure code, no processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.backoff import backoff_delay
from rrd.fsm import ExitReason, IllegalTransition, WorkerFSM, WorkerState

S = WorkerState


def test_the_happy_life_of_a_worker() -> None:
    fsm = WorkerFSM()
    for state in (S.READY, S.WORKING, S.READY, S.WORKING, S.DRAINING, S.STOPPING, S.STOPPED):
        fsm.to(state, ExitReason.RESET if state is S.DRAINING else None)
    assert fsm.reason is ExitReason.RESET


FORBIDDEN = [
    # A busy worker is never stopped: it is marked (DRAINING) and stopped after its job. This
    # edge let a reset SIGKILL a worker that had just been handed to a caller.
    (S.WORKING, S.STOPPING),
    # A worker marked to leave never takes another job.
    (S.DRAINING, S.READY),
    (S.DRAINING, S.WORKING),
    # A worker is handed out only once it is ready, and never twice.
    (S.SPAWNING, S.WORKING),
    (S.WORKING, S.WORKING),
    # Once stopping, it only finishes stopping: a kill then is part of the stop.
    (S.STOPPING, S.ERRORED),
    (S.STOPPING, S.READY),
    # Nothing comes back.
    *[(S.STOPPED, t) for t in S],
    *[(S.ERRORED, t) for t in S],
]


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_edges_that_must_not_exist_raise(source: WorkerState, target: WorkerState) -> None:
    fsm = WorkerFSM()
    fsm.state = source
    assert not fsm.can(target)
    with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
        fsm.to(target)
    assert fsm.state is source


@pytest.mark.parametrize("state", [S.SPAWNING, S.READY, S.WORKING, S.DRAINING])
def test_a_worker_in_service_or_starting_may_always_be_killed(state: WorkerState) -> None:
    fsm = WorkerFSM()
    fsm.state = state
    fsm.to(S.ERRORED, ExitReason.GARBAGE)
    assert fsm.reason is ExitReason.GARBAGE


def test_in_service_is_ready_working_or_draining() -> None:
    assert {s for s in S if s.in_service} == {S.READY, S.WORKING, S.DRAINING}


def test_the_first_reason_sticks() -> None:
    fsm = WorkerFSM()
    fsm.to(S.READY)
    fsm.to(S.STOPPING, ExitReason.MAX_JOBS)
    fsm.to(S.STOPPED, ExitReason.DESTROY)
    assert fsm.reason is ExitReason.MAX_JOBS


def test_backoff_starts_at_the_initial_delay_and_multiplies_up_to_the_maximum() -> None:
    def delay(attempt: int) -> float:
        return backoff_delay(attempt, initial=0.1, maximum=10, multiplier=2, jitter=0)

    assert delay(0) == 0.0
    assert [delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert delay(8) == 10 and delay(10**6) == 10
    assert backoff_delay(5, initial=0.5, maximum=30, multiplier=3, jitter=0) == 30
    assert backoff_delay(4, initial=0.5, maximum=30, multiplier=3, jitter=0) == 13.5
    assert backoff_delay(7, initial=0.25, maximum=30, multiplier=1, jitter=0) == 0.25


def test_jitter_spreads_each_delay_either_way_within_its_fraction() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(3, initial=1, maximum=100, jitter=0.2, rng=rng) for _ in range(500)]
    assert min(delays) >= 3.2 - 1e-9 and max(delays) <= 4.8 + 1e-9
    assert min(delays) < 3.4 and max(delays) > 4.6


@given(
    st.integers(0, 10**6),
    st.floats(0, 5),
    st.floats(0.1, 100),
    st.floats(1, 10),
    st.floats(0, 1),
)
def test_backoff_stays_within_bounds(
    attempt: int, initial: float, maximum: float, multiplier: float, jitter: float
) -> None:
    delay = backoff_delay(
        attempt, initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter
    )
    assert 0 <= delay <= maximum
