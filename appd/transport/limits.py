"""Bounded concurrency for handlers, and the watchdog that enforces the request deadline.

Requests run in the thread that read them (no hand-off): a :class:`Limiter` only decides whether
that thread may run its handler now, may wait in the queue, or must answer "service busy".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from appd.errors import ServiceBusy

__all__ = ["InFlight", "Limiter", "Watchdog"]


class Limiter:
    """At most ``slots`` handlers at once, at most ``max_queue`` requests waiting for a slot,
    none waiting longer than ``queue_timeout`` seconds (None: no limit)."""

    def __init__(
        self,
        slots: int,
        max_queue: int,
        queue_timeout: float | None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._slots = slots
        self._max_queue = max_queue
        self._queue_timeout = queue_timeout
        self._on_release = on_release
        self._cond = threading.Condition(threading.Lock())
        self.running = 0
        self.waiting = 0

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if allowed; :class:`ServiceBusy` otherwise."""
        with self._cond:
            if self.running < self._slots:
                self.running += 1
                return
            if self.waiting >= self._max_queue:
                raise ServiceBusy(
                    f"all {self._slots} handler slots are busy and the queue is full "
                    f"(max_queue = {self._max_queue})"
                )
            self.waiting += 1
            try:
                got = self._cond.wait_for(lambda: self.running < self._slots, self._queue_timeout)
            finally:
                self.waiting -= 1
            if not got:
                raise ServiceBusy(
                    f"no handler slot became free within queue_timeout ({self._queue_timeout} s)"
                )
            self.running += 1

    def release(self) -> None:
        """Give a slot back (and count the request as served)."""
        with self._cond:
            self.running -= 1
            if self._on_release is not None:
                self._on_release()
            self._cond.notify()


class InFlight:
    """One request being handled, as the watchdog sees it."""

    __slots__ = ("abandoned", "deadline", "on_expire")

    def __init__(self, deadline: float, on_expire: Callable[[], None]) -> None:
        self.deadline = deadline
        self.on_expire = on_expire
        self.abandoned = False


class Watchdog:
    """Abandons requests whose handler runs past the deadline.

    A Python thread cannot be killed, so an overrunning handler keeps running; the watchdog
    answers its client with a timeout error, closes that connection and gives the handler's slot
    back, so the service goes on serving.  One thread for the whole server, not one per request.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._entries: dict[int, InFlight] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the watchdog thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="appd-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the watchdog thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def track(self, timeout: float, on_expire: Callable[[], None]) -> InFlight:
        """Start watching a request; ``on_expire`` runs (in the watchdog) if it overruns."""
        entry = InFlight(time.monotonic() + timeout, on_expire)
        with self._lock:
            self._entries[id(entry)] = entry
        return entry

    def finish(self, entry: InFlight) -> bool:
        """Stop watching; False when the watchdog already abandoned the request."""
        with self._lock:
            self._entries.pop(id(entry), None)
            return not entry.abandoned

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            expired: list[InFlight] = []
            with self._lock:
                for key, entry in list(self._entries.items()):
                    if entry.deadline <= now:
                        entry.abandoned = True
                        del self._entries[key]
                        expired.append(entry)
            for entry in expired:
                _call_quietly(entry.on_expire)


def _call_quietly(func: Callable[[], Any]) -> None:
    try:
        func()
    except Exception:  # the watchdog must survive whatever a callback does
        from appd.logging import get_logger

        get_logger("appd.transport").exception("watchdog callback failed")
