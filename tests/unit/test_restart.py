"""The restart policy and tracker, driven by a fake clock: no processes, no sleeps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appd.runtime.restart import RestartPolicy, RestartTracker, as_seconds


def _crash_loop(
    tracker: RestartTracker, runs: list[float], start: float = 0.0
) -> list[float | None]:
    """Each run lasts the given seconds then crashes; the next start follows the delay."""
    now = start
    delays: list[float | None] = []
    for run in runs:
        tracker.started(now)
        now += run
        delay = tracker.exited(now)
        delays.append(delay)
        if delay is None:
            break
        now += delay
    return delays


def test_documented_defaults() -> None:
    policy = RestartPolicy()
    assert (policy.interval, policy.max_interval, policy.backoff) == (1.0, 60.0, 2.0)
    assert (policy.healthy_after, policy.max_restarts, policy.window) == (30.0, 5, 60.0)


def test_the_delay_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(interval=1, max_interval=5, max_restarts=100, window=1)
    assert _crash_loop(RestartTracker(policy), [0.1] * 6) == [1, 2, 4, 5, 5, 5]


def test_a_healthy_run_resets_the_delay() -> None:
    policy = RestartPolicy(interval=1, healthy_after=10, max_restarts=100, window=1)
    tracker = RestartTracker(policy)
    assert _crash_loop(tracker, [0.1, 0.1, 0.1]) == [1, 2, 4]
    assert _crash_loop(tracker, [10.0, 0.1], start=100) == [1, 2]


def test_too_many_restarts_in_the_window_gives_up_with_a_reason() -> None:
    policy = RestartPolicy(interval=0.1, backoff=1, max_restarts=3, window=60)
    tracker = RestartTracker(policy)
    assert _crash_loop(tracker, [0.1] * 5) == [0.1, 0.1, 0.1, None]
    assert tracker.restarts == 3
    assert tracker.gave_up_because is not None
    assert "3 restarts within 60 s" in tracker.gave_up_because


def test_restarts_older_than_the_window_no_longer_count() -> None:
    policy = RestartPolicy(interval=1, backoff=1, max_restarts=2, window=10, healthy_after=1000)
    tracker = RestartTracker(policy)
    assert _crash_loop(tracker, [0.5, 0.5]) == [1, 1]
    assert _crash_loop(tracker, [20.0]) == [1], "both earlier restarts fell out of the window"


def test_zero_max_restarts_never_restarts() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=0))
    assert _crash_loop(tracker, [1.0]) == [None]


def test_from_interval_accepts_timedelta_and_raises_the_cap_when_needed() -> None:
    assert RestartPolicy.from_interval(timedelta(seconds=10)).interval == 10
    big = RestartPolicy.from_interval(120)
    assert (big.interval, big.max_interval) == (120, 120)
    policy = RestartPolicy(interval=3)
    assert RestartPolicy.coerce(policy) is policy


@pytest.mark.parametrize(
    "kwargs",
    [{"interval": -1}, {"backoff": 0.5}, {"max_restarts": -1}, {"interval": 10, "max_interval": 5}],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RestartPolicy"):
        RestartPolicy(**kwargs)


def test_as_seconds() -> None:
    assert as_seconds(timedelta(milliseconds=250)) == 0.25
    assert as_seconds(2) == 2.0
    with pytest.raises(ValueError, match="check_interval must not be negative"):
        as_seconds(-1, name="check_interval")


@given(
    interval=st.floats(0, 100),
    extra=st.floats(0, 100),
    backoff=st.floats(1, 10),
    runs=st.lists(st.floats(0, 1000), min_size=1, max_size=30),
)
def test_delays_stay_between_interval_and_cap(
    interval: float, extra: float, backoff: float, runs: list[float]
) -> None:
    policy = RestartPolicy(
        interval=interval, max_interval=interval + extra, backoff=backoff, max_restarts=1000
    )
    for delay in _crash_loop(RestartTracker(policy), runs):
        assert delay is not None
        assert interval <= delay <= interval + extra
