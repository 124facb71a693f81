"""WATCHDOG_USEC/WATCHDOG_PID parsing and the judgement of which processes showed life."""

from __future__ import annotations

from typing import Any

import pytest

from appd_systemd import watchdog_interval
from appd_systemd.watchdog import silent_processes


def test_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, 42) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, 42) == 0.25


def test_no_watchdog_when_unset_or_meant_for_another_process() -> None:
    assert watchdog_interval({}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": ""}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "41"}, 42) is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "0"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "-5"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "100", "WATCHDOG_PID": "me"}, "WATCHDOG_PID"),
    ],
)
def test_malformed_values_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        watchdog_interval(environ, 42)


def _status(*processes: dict[str, Any]) -> dict[str, Any]:
    echo = {"state": "ready", "processes": list(processes)}
    return {"state": "running", "services": {"echo": echo}}


def test_a_ready_process_silent_too_long_is_named() -> None:
    status = _status(
        {"worker": 0, "state": "ready", "pid": 10, "heartbeat_age": 0.2},
        {"worker": 1, "state": "ready", "pid": 11, "heartbeat_age": 1.5},
    )
    assert silent_processes(status, max_heartbeat_age=1.0, since_status=0.0) == ["echo[1]"]
    # The status itself ages: half a second later the first one is late too.
    assert silent_processes(status, max_heartbeat_age=1.0, since_status=0.9) == [
        "echo[0]",
        "echo[1]",
    ]
    assert silent_processes(status, max_heartbeat_age=2.0, since_status=0.0) == []


def test_processes_not_ready_are_not_judged() -> None:
    status = _status(
        {"worker": 0, "state": "starting", "pid": 10, "heartbeat_age": 60.0},
        {"worker": 1, "state": "backoff", "pid": None, "heartbeat_age": None},
        {"worker": 2, "state": "stopping", "pid": 12, "heartbeat_age": 60.0},
    )
    assert silent_processes(status, max_heartbeat_age=1.0, since_status=0.0) == []
