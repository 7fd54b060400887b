"""The worker state table, and backoff: pure code, no processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.backoff import backoff_delay
from rrd.fsm import TRANSITIONS, IllegalTransition, RetireReason, WorkerFSM, WorkerState

S = WorkerState


def test_the_happy_life_of_a_worker() -> None:
    fsm = WorkerFSM()
    for state in (S.READY, S.WORKING, S.READY, S.WORKING, S.DRAINING, S.STOPPING, S.STOPPED):
        fsm.to(state, RetireReason.RESET if state is S.DRAINING else None)
    assert fsm.reason is RetireReason.RESET


@pytest.mark.parametrize("state", [s for s in S if s.live])
def test_every_live_state_may_fail(state: WorkerState) -> None:
    assert S.ERRORED in TRANSITIONS[state]


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in S for t in S if t not in TRANSITIONS[s]],
)
def test_illegal_transitions_raise(source: WorkerState, target: WorkerState) -> None:
    fsm = WorkerFSM()
    fsm.state = source
    with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
        fsm.to(target)


def test_terminal_states_are_final() -> None:
    assert not TRANSITIONS[S.STOPPED] and not TRANSITIONS[S.ERRORED]
    assert not S.STOPPED.live and not S.ERRORED.live


def test_the_first_reason_sticks() -> None:
    fsm = WorkerFSM()
    fsm.to(S.READY)
    fsm.to(S.STOPPING, RetireReason.MAX_JOBS)
    fsm.to(S.STOPPED, RetireReason.DESTROY)
    assert fsm.reason is RetireReason.MAX_JOBS


def test_backoff_retries_a_single_failure_at_once_then_doubles() -> None:
    rng = random.Random(1)
    assert backoff_delay(0) == backoff_delay(1) == 0.0
    delays = [backoff_delay(n, base=0.1, maximum=10, jitter=0, rng=rng) for n in range(2, 12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 10


@given(st.integers(0, 10**6), st.floats(0.01, 5), st.floats(0.1, 100), st.floats(0, 0.5))
def test_backoff_stays_within_bounds(
    failures: int, base: float, maximum: float, jitter: float
) -> None:
    delay = backoff_delay(failures, base=base, maximum=maximum, jitter=jitter)
    assert 0 <= delay <= maximum
