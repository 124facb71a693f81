"""The plugin's notifications, driven by the supervisor's hooks, received on a real socket."""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
from support import wait_for
from systemd_fixtures import NotifySocket

from appd_systemd import PassedSocket, SystemdPlugin
from appd_systemd.plugin import SYSTEMD_ENV, summary


def status(state: str = "running", **services: str) -> dict[str, Any]:
    return {
        "state": state,
        "pid": os.getpid(),
        "services": {
            name: {
                "state": s,
                "processes": [{"worker": 0, "state": s, "pid": 1, "heartbeat_age": 0.0}],
            }
            for name, s in services.items()
        },
    }


@pytest.fixture
def plugin(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> SystemdPlugin:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    for name in SYSTEMD_ENV[1:]:
        monkeypatch.delenv(name, raising=False)
    made = SystemdPlugin()
    yield made
    made.appd_quit()


def test_ready_only_once_every_service_is_ready(
    plugin: SystemdPlugin, notify_socket: NotifySocket
) -> None:
    plugin.appd_status(status=status(echo="starting", power="starting"))
    plugin.appd_status(status=status(echo="ready", power="starting"))
    notify_socket.drain()
    assert notify_socket.with_key("READY") == []
    plugin.appd_status(status=status(echo="ready", power="ready"))
    plugin.appd_status(status=status(echo="ready", power="ready"))
    notify_socket.drain()
    ready = notify_socket.with_key("READY", "1")
    assert len(ready) == 1
    assert ready[0].fields["STATUS"] == "2/2 services ready"
    statuses = [m.fields["STATUS"] for m in notify_socket.with_key("STATUS")]
    assert statuses == [
        "0/2 services ready; starting: echo, power",
        "1/2 services ready; starting: power",
        "2/2 services ready",
    ]


def test_status_names_restarting_and_fatal_services() -> None:
    line = summary(status(a="ready", b="backoff", c="fatal"))
    assert line == "1/3 services ready; restarting: b; FATAL: c"


def test_status_tells_a_first_start_from_a_restart() -> None:
    restarted = {"state": "running", "services": {
        "a": {"state": "starting", "restarts": 0},
        "b": {"state": "starting", "restarts": 2},
    }}
    assert summary(restarted) == "0/2 services ready; starting: a; restarting: b"


def test_reloading_then_ready_again_then_stopping(
    plugin: SystemdPlugin, notify_socket: NotifySocket
) -> None:
    plugin.appd_status(status=status(echo="ready"))
    notify_socket.wait_for("READY", "1")
    plugin.appd_reload(phase="begin")
    plugin.appd_status(status=status("reloading", echo="starting"))
    plugin.appd_status(status=status("running", echo="ready"))
    notify_socket.drain()
    assert len(notify_socket.with_key("READY")) == 1  # not before the reload has ended
    reloading = notify_socket.with_key("RELOADING", "1")
    assert len(reloading) == 1
    assert int(reloading[0].fields["MONOTONIC_USEC"]) > 0
    plugin.appd_reload(phase="end")
    notify_socket.drain()
    ready = notify_socket.with_key("READY", "1")
    assert len(ready) == 2
    assert ready[1].at >= reloading[0].at
    plugin.appd_status(status=status("stopping", echo="stopping"))
    plugin.appd_quit()
    notify_socket.drain()
    assert len(notify_socket.with_key("STOPPING", "1")) == 1


def test_stopping_is_sent_on_quit_when_the_status_did_not_say_it(
    plugin: SystemdPlugin, notify_socket: NotifySocket
) -> None:
    plugin.appd_status(status=status(echo="ready"))
    plugin.appd_quit()
    assert notify_socket.wait_for("STOPPING", "1").fields["STATUS"] == "stopping"


def test_variables_leave_the_environment_before_the_first_fork(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDNAMES", "")
    made = SystemdPlugin()
    made.appd_pre_fork()
    assert not [name for name in SYSTEMD_ENV if name in os.environ]
    assert made.notifier is not None and made.interval == 2.0
    made.appd_quit()


def test_a_service_process_drops_the_variables_and_notifies_nothing(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    made = SystemdPlugin()
    made.appd_post_fork()
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    made.appd_status(status=status(echo="ready"))
    made.appd_quit()
    assert notify_socket.drain(timeout=0.2) == []


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    made = SystemdPlugin()
    made.appd_status(status=status(echo="ready"))
    made.appd_reload(phase="begin")
    made.appd_quit()
    assert made.notifier is None


def test_watchdog_pings_only_while_every_process_shows_life(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    made = SystemdPlugin()
    made.appd_configure(config={"systemd": {"max_heartbeat_age": 0.3}})
    assert made.max_heartbeat_age == 0.3
    try:
        doc = status(echo="ready")
        made.appd_status(status=doc)
        for _ in range(3):  # the supervisor writes its status while all is well
            made.appd_status(status=doc)
            time.sleep(0.1)
        wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) >= 3, message="pings")
        # The process stops showing life: its heartbeat ages past the interval.
        doc["services"]["echo"]["processes"][0]["heartbeat_age"] = 0.5
        made.appd_status(status=doc)
        time.sleep(0.15)  # let a ping already on its way arrive
        before = len(notify_socket.with_key("WATCHDOG"))
        time.sleep(0.5)
        assert len(notify_socket.with_key("WATCHDOG")) == before
        doc["services"]["echo"]["processes"][0]["heartbeat_age"] = 0.0
        made.appd_status(status=doc)
        wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) > before, message="resumed")
    finally:
        made.appd_quit()


def test_watchdog_stops_when_the_status_stops_coming(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.name)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    made = SystemdPlugin()
    try:
        made.appd_status(status=status(echo="ready"))
        assert made.max_heartbeat_age == 1.75  # the default: the interval, but at least 1.75 s
        assert made.healthy()
        # Between status writes a live process looks older by the time since the last one.
        assert made.healthy(now=time.monotonic() + 1.2)
        assert not made.healthy(now=time.monotonic() + 1.9)
        assert not made.healthy(now=time.monotonic() + 2.5)  # no status: the supervisor hangs
    finally:
        made.appd_quit()


def test_a_reload_seen_only_in_the_status_is_notified_too(
    plugin: SystemdPlugin, notify_socket: NotifySocket
) -> None:
    plugin.appd_status(status=status(echo="ready"))
    plugin.appd_status(status=status("reloading", echo="starting"))
    plugin.appd_status(status=status("running", echo="ready"))
    notify_socket.drain()
    assert len(notify_socket.with_key("RELOADING", "1")) == 1
    assert len(notify_socket.with_key("READY", "1")) == 2
    # A later reload announced by the hook waits for the hook's end, whatever the status says.
    plugin.appd_reload(phase="begin")
    plugin.appd_status(status=status("running", echo="ready"))
    notify_socket.drain()
    assert len(notify_socket.with_key("READY", "1")) == 2
    plugin.appd_reload(phase="end")
    notify_socket.drain()
    assert len(notify_socket.with_key("READY", "1")) == 3


def test_a_passed_socket_is_handed_out_as_a_duplicate_it_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    made = SystemdPlugin()
    made.appd_pre_fork()  # the supervisor
    with socket.socket() as passed:
        passed.bind(("127.0.0.1", 0))
        passed.listen()
        made._passed = [PassedSocket(passed, "echo")]
        service: Any = SimpleNamespace(name="echo", settings=None, host=None, port=None, path=None)
        first = made.appd_listener(service=service)
        assert first is not passed and first.getsockname() == passed.getsockname()
        first.close()  # the supervisor closes its listener (the service went FATAL) ...
        again = made.appd_listener(service=service)  # ... and asks again when it restarts
        with again, socket.create_connection(passed.getsockname(), timeout=5):
            conn, _ = again.accept()
            conn.close()
        other: Any = SimpleNamespace(name="power", settings=None, host=None, port=None, path=None)
        assert made.appd_listener(service=other) is None  # named for another service
