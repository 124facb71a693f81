"""The notification protocol against a real AF_UNIX datagram socket (path and abstract)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support import wait_for
from systemd_fixtures import NotifySocket

from appd_systemd import Notifier, notify_address


def test_address_forms() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == b"\0abstract/name"
    for bad in ("", "@", "relative/path", "notify"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            notify_address(bad)


def test_one_datagram_of_assignments_reaches_the_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.name})
    assert notifier is not None
    try:
        assert notifier.send("READY=1", "STATUS=1/1 services ready")
        assert notifier.send("WATCHDOG=1")
    finally:
        notifier.close()
    wait_for(lambda: len(notify_socket.drain(timeout=0.0)) == 2, message="two datagrams")
    received = notify_socket.drain()
    assert [m.raw for m in received] == [b"READY=1\nSTATUS=1/1 services ready", b"WATCHDOG=1"]
    assert received[0].fields == {"READY": "1", "STATUS": "1/1 services ready"}


def test_without_notify_socket_there_is_no_notifier() -> None:
    assert Notifier.from_environ({}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "not-absolute"}) is None


def test_a_socket_that_went_away_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    notifier = Notifier(str(path))
    try:
        assert notifier.send("READY=1")
        sock.close()
        path.unlink()
        assert not notifier.send("WATCHDOG=1")
        assert not notifier.send("WATCHDOG=1")
    finally:
        notifier.close()
