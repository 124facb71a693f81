"""The serving loop over real socket pairs: connections served in turn, a long request handed
off so the others keep being read, the held connection given back afterwards."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support import wait_for

from appd.transport.serving_loop import HANDOFF_AFTER, ServingLoop


class _Conn:
    """Reads one byte per readiness; blocks while ``hold`` is set and the byte is ``b"h"``."""

    def __init__(self, name: str) -> None:
        self.sock, self.peer = socket.socketpair()
        self.closed = False
        self.name = name
        self.seen: list[tuple[bytes, int]] = []
        self.hold = threading.Event()
        self.swept = 0

    def on_readable(self) -> None:
        data = self.sock.recv(1)
        if data == b"h":
            self.hold.wait(10)
        self.seen.append((data, threading.get_ident()))

    def sweep(self, now: float) -> None:
        self.swept += 1

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.peer.close()


@pytest.fixture
def loop() -> Iterator[ServingLoop]:
    serving = ServingLoop()
    yield serving
    serving.stop()


def _refuse_to_start(self: threading.Thread) -> None:
    """``Thread.start`` of a process at its thread limit."""
    raise RuntimeError("can't start new thread")


@pytest.fixture
def held(loop: ServingLoop) -> Iterator[tuple[_Conn, _Conn]]:
    """Two connections in the loop; the loop's thread is held inside ``slow``'s request."""
    slow, fast = _Conn("slow"), _Conn("fast")
    try:
        loop.add(slow)
        loop.add(fast)
        slow.peer.sendall(b"h")
        assert wait_for(lambda: loop._current is slow, timeout=10)
        yield slow, fast
    finally:
        slow.hold.set()
        slow.close()
        fast.close()


def test_serves_every_connection_from_one_thread(loop: ServingLoop) -> None:
    conns = [_Conn(str(i)) for i in range(3)]
    try:
        for conn in conns:
            loop.add(conn)
        for conn in conns:
            conn.peer.sendall(b"x")
        assert wait_for(lambda: all(c.seen for c in conns), timeout=10)
        threads = {thread for c in conns for _, thread in c.seen}
        assert len(threads) == 1
        assert wait_for(lambda: conns[0].swept > 0, timeout=10)  # idle sweeps happen
    finally:
        for conn in conns:
            conn.close()


def test_a_long_request_hands_the_loop_to_another_thread(
    loop: ServingLoop, held: tuple[_Conn, _Conn]
) -> None:
    slow, fast = held
    fast.peer.sendall(b"x")
    loop.check(time.monotonic() + HANDOFF_AFTER * 2)  # as if it overran the threshold
    assert wait_for(lambda: fast.seen, timeout=10)  # served while slow still holds
    assert not slow.seen
    slow.peer.sendall(b"y")  # must not be read by the new thread while slow is held
    fast.peer.sendall(b"z")
    assert wait_for(lambda: len(fast.seen) == 2, timeout=10)
    assert not slow.seen
    slow.hold.set()
    # The old thread finishes, gives the connection back, and the loop reads it again.
    assert wait_for(lambda: len(slow.seen) == 2, timeout=10)
    assert slow.seen[1][0] == b"y"
    assert slow.seen[0][1] != fast.seen[0][1]


def test_a_quick_request_is_not_handed_off(loop: ServingLoop) -> None:
    conn = _Conn("quick")
    try:
        loop.add(conn)
        conn.peer.sendall(b"x")
        assert wait_for(lambda: conn.seen, timeout=10)
        loop.check(time.monotonic() + 60)  # nothing is running: nothing to hand off
        conn.peer.sendall(b"y")
        assert wait_for(lambda: len(conn.seen) == 2, timeout=10)
        assert conn.seen[0][1] == conn.seen[1][1]
    finally:
        conn.close()


def test_a_hand_off_without_a_thread_to_spare_keeps_the_old_thread(
    loop: ServingLoop, held: tuple[_Conn, _Conn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no thread can be started (a thread limit), the thread holding the loop keeps it:
    it goes on serving every connection once its long request ends."""
    slow, fast = held
    monkeypatch.setattr(threading.Thread, "start", _refuse_to_start)
    loop.check(time.monotonic() + HANDOFF_AFTER * 2)
    loop.hand_off(slow)
    monkeypatch.undo()
    assert loop._current is slow  # still the loop's thread
    slow.peer.sendall(b"y")
    fast.peer.sendall(b"x")
    slow.hold.set()
    assert wait_for(lambda: len(slow.seen) == 2 and fast.seen, timeout=10)
    assert {thread for c in (slow, fast) for _, thread in c.seen} == {slow.seen[0][1]}


def test_a_loop_that_cannot_start_its_thread_refuses_the_connection(
    loop: ServingLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first connection starts the loop's thread: if it cannot, ``add`` says so (the
    server then closes the connection) rather than watching a socket nobody serves."""
    conn = _Conn("first")
    try:
        monkeypatch.setattr(threading.Thread, "start", _refuse_to_start)
        with pytest.raises(RuntimeError):
            loop.add(conn)
        monkeypatch.undo()
        assert loop._conns == {}
        loop.add(conn)  # threads to be had again: served
        conn.peer.sendall(b"x")
        assert wait_for(lambda: conn.seen, timeout=10)
    finally:
        conn.close()


def test_a_request_read_at_once_is_dated_from_before_the_poll_not_after(
    loop: ServingLoop,
) -> None:
    """A request that arrived while the loop's thread was held up between two polls (here by
    the loop's lock) counts as arrived no later than it did: its deadline must not start late."""
    first, second = _Conn("first"), _Conn("second")
    dated: list[float] = []
    read = second.on_readable

    def on_readable() -> None:
        dated.append(loop.arrived)
        read()

    second.on_readable = on_readable  # type: ignore[method-assign]
    try:
        loop.add(first)
        loop.add(second)
        first.peer.sendall(b"h")
        assert wait_for(lambda: loop._current is first, timeout=10)
        with loop._lock:  # the loop's thread, done with ``first``, waits here
            first.hold.set()
            assert wait_for(lambda: first.seen, timeout=10)
            sent = time.monotonic()
            second.peer.sendall(b"x")
            time.sleep(0.05)
        assert wait_for(lambda: second.seen, timeout=10)
        assert dated[0] <= sent
    finally:
        first.close()
        second.close()
