"""One thread serving every authenticated connection of a ``concurrency = 1`` service.

With a thread per connection, several clients at once cost the server a GIL hand-over from
thread to thread on nearly every request; one thread waiting in ``epoll`` for all connections
serves more requests per second at half the p99 latency (measured: docs/performance.md).

A handler that takes long must not stall the other connections: they must still be read, so
that their requests queue, get "service busy" or time out exactly as ``max_queue`` and
``queue_timeout`` say.  So when the loop's thread has been inside one request for longer than
:data:`HANDOFF_AFTER`, :meth:`ServingLoop.check` (called by the server's watchdog) hands the loop
to a fresh thread; the old thread only finishes that request, gives its connection back to the
loop and ends.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Protocol

__all__ = ["HANDOFF_AFTER", "SWEEP_INTERVAL", "LoopConnection", "ServingLoop"]

#: Seconds one request may keep the loop's thread before another thread takes the loop over.
HANDOFF_AFTER = 0.05
#: How often the loop looks for idle connections and for shutdown.
SWEEP_INTERVAL = 0.25
#: A poll that returns sooner than this found its events ready when it was called.
READY_AT_ONCE = 0.0005


class LoopConnection(Protocol):
    """What the loop needs of a connection."""

    sock: socket.socket
    closed: bool

    def on_readable(self) -> None:
        """Read what arrived and serve each whole request in it (never raises)."""
        ...

    def sweep(self, now: float) -> None:
        """Close the connection if it is idle past its timeout or the server is stopping."""
        ...


class ServingLoop:
    """An ``epoll`` set of authenticated connections, served by one thread at a time.

    (``epoll`` itself rather than :mod:`selectors`, whose Python wrapper around each wait costs
    about a microsecond per request.)
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._conns: dict[int, LoopConnection] = {}
        self._lock = threading.Lock()
        self._generation = 0
        #: The connection the current loop thread is serving, and since when (0.0: none).
        self._current: LoopConnection | None = None
        self._busy_since = 0.0
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: The earliest time the requests now being read may have arrived (monotonic): their
        #: deadlines count from it (see :meth:`_run`).
        self.arrived = time.monotonic()
        self._returned = self.arrived

    def add(self, conn: LoopConnection) -> None:
        """Serve ``conn`` from the loop (starts the loop's thread on first use).
        :class:`RuntimeError` (and ``conn`` not watched) when that thread cannot be started."""
        self._watch(conn)
        with self._lock:
            if self._thread is None and not self._stopped and not self._spawn():
                self.remove(conn)
                raise RuntimeError("no thread can be started to serve the loop")

    def remove(self, conn: LoopConnection) -> None:
        """Stop watching ``conn`` (before it is closed, so its descriptor can be reused)."""
        fd = conn.sock.fileno()
        if fd < 0:  # closed already: find it by identity
            fd = next((f for f, c in list(self._conns.items()) if c is conn), -1)
        if self._conns.get(fd) is conn:
            del self._conns[fd]
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def _watch(self, conn: LoopConnection) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self._conns[fd] = conn
            self._epoll.register(fd, select.EPOLLIN)

    def check(self, now: float) -> None:
        """Watchdog: hand the loop to a fresh thread if a request has held it too long."""
        with self._lock:
            conn, since = self._current, self._busy_since
            if conn is None or not since or now - since < HANDOFF_AFTER or self._stopped:
                return
            # The old thread finishes this connection's request on its own; until then the
            # new thread must not read the connection.
            self._take_over(conn)

    def hand_off(self, conn: LoopConnection) -> None:
        """Called by the loop's thread serving ``conn`` when its request is about to wait (for
        a handler slot): the loop goes to a fresh thread now rather than after
        :data:`HANDOFF_AFTER`, so the other connections' requests are read (and their
        deadlines counted) as they arrive, not one hand-off after another."""
        with self._lock:
            if self._current is not conn or self._stopped:
                return
            self._take_over(conn)

    def stop(self) -> None:
        """End the loop (its thread leaves within :data:`SWEEP_INTERVAL`)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            thread.join(2 * SWEEP_INTERVAL)
            if thread.is_alive():
                return  # stuck in a handler past shutdown_grace: leave the epoll set to it
        self._epoll.close()

    def _take_over(self, conn: LoopConnection) -> None:
        """With the lock held: a fresh thread takes the loop over from the one serving
        ``conn``.  When no thread can be started, the old thread simply stays the loop's."""
        since = self._busy_since
        self._current, self._busy_since = None, 0.0
        self.remove(conn)
        if not self._spawn():
            self._current, self._busy_since = conn, since
            # Its own thread may be closing it meanwhile (without this lock): never take over
            # a reused descriptor's entry, and never keep watching a closed one.
            if not conn.closed and conn.sock.fileno() not in self._conns:
                with contextlib.suppress(OSError, ValueError):
                    self._watch(conn)
                if conn.closed:
                    self.remove(conn)

    def _spawn(self) -> bool:
        """With the lock held: start a thread to serve the loop; False (and nothing changed)
        when the process cannot start one now (a thread limit)."""
        generation = self._generation + 1
        thread = threading.Thread(
            target=self._run, args=(generation,), name="appd-serve", daemon=True
        )
        # The events of the batch the old thread was reading are read again by the new one:
        # they arrived no earlier than that batch's estimate.
        self._returned = self.arrived
        try:
            thread.start()  # it compares generations only under the lock, held here
        except RuntimeError:
            return False
        self._generation, self._thread = generation, thread
        return True

    def _run(self, generation: int) -> None:
        poll, conns, monotonic = self._epoll.poll, self._conns, time.monotonic
        now = monotonic()  # the clock is read twice per poll and once per request served
        next_sweep = now + SWEEP_INTERVAL
        returned = self._returned  # a thread taking the loop over goes on from the last poll
        while not self._stopped:
            # Read right before the poll, not taken from the last request's end: a thread
            # held up in between (the loop's lock, the GIL, a busy machine) would otherwise
            # make a poll that was ready at once look as if it had waited.
            called = monotonic()
            events = poll(SWEEP_INTERVAL)
            # When did what this poll reports arrive?  If the poll had to wait, about now; if
            # it was ready at once, at some point since the previous poll returned (while this
            # thread was busy): that earlier time, so that no request's deadline is counted
            # from later than it really arrived.
            previous, returned = returned, monotonic()
            self._returned = now = returned
            self.arrived = returned if returned - called > READY_AT_ONCE else previous
            for fd, _ in events:
                conn = conns.get(fd)
                if conn is None:
                    continue
                self._busy_since = now
                self._current = conn
                try:
                    conn.on_readable()
                finally:
                    now = monotonic()
                    with self._lock:
                        handed_off = generation != self._generation
                        if not handed_off:
                            self._current, self._busy_since = None, 0.0
                if handed_off:
                    if not conn.closed:
                        with contextlib.suppress(OSError, ValueError):
                            self._watch(conn)
                    return
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                for conn in list(conns.values()):
                    conn.sweep(now)

    def __repr__(self) -> str:
        return f"<ServingLoop generation={self._generation} stopped={self._stopped}>"
