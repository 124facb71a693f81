"""Bounded concurrency for handlers, and the watchdog that enforces the request deadline.

Requests run in the thread that read them (no hand-off): a :class:`Limiter` only decides whether
that thread may run its handler now, may wait in the queue, or must answer "service busy".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from appd.errors import DeadlineExceeded, ServiceBusy

__all__ = ["Limiter", "ServerLoad", "Watchdog"]


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """How loaded one serving process is right now (what metrics plugins sample)."""

    #: Handlers running now.
    running: int
    #: Requests waiting for a handler slot now (the queue depth).
    waiting: int
    #: Requests refused with ``ServiceBusy`` since the server started, by command name.
    refused: Mapping[str, int]
    #: Requests not run because their deadline passed first (on arrival, in the queue, or
    #: while their client had gone) since the server started, by command name.
    expired: Mapping[str, int] = field(default_factory=dict)


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
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.running = 0
        self.waiting = 0
        #: Requests refused busy, by the label :meth:`acquire` was given (the command name).
        self.refused: Counter[str] = Counter()
        #: Requests not run because their deadline passed, by label (see :meth:`expire`).
        self.expired: Counter[str] = Counter()

    def acquire(
        self,
        label: str = "",
        deadline: float | None = None,
        before_wait: Callable[[], None] | None = None,
    ) -> bool:
        """Take a slot, waiting in the queue if allowed; :class:`ServiceBusy` otherwise.
        True when the request had to wait for its slot.

        :param label: what a refusal is counted under in :attr:`refused` (the command name).
        :param deadline: when the caller stops waiting (:func:`time.monotonic`); a request
            still queued then gets :class:`~appd.errors.DeadlineExceeded` (counted in
            :attr:`expired`) instead of waiting on to ``queue_timeout``.
        :param before_wait: called (with no lock held) when the request is about to wait.
        """
        if before_wait is not None:
            with self._lock:
                if self.running < self._slots:
                    self.running += 1
                    return False
                self._refuse_unqueued(label, deadline)  # nothing to wait for: no hand-off
            before_wait()
        with self._lock:
            if self.running < self._slots:
                self.running += 1
                return False
            self._refuse_unqueued(label, deadline)
            wait = self._queue_timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if wait is None or left < wait:
                    wait = max(0.0, left)
            self.waiting += 1
            try:
                got = self._cond.wait_for(lambda: self.running < self._slots, wait)
            finally:
                self.waiting -= 1
            if not got:
                if deadline is not None and time.monotonic() >= deadline:
                    self.expired[label] += 1
                    raise DeadlineExceeded(
                        "the deadline passed while the request waited for a handler slot; "
                        "it was not executed"
                    )
                self.refused[label] += 1
                raise ServiceBusy(
                    f"no handler slot became free within queue_timeout ({self._queue_timeout} s)"
                )
            self.running += 1
            return True

    def _refuse_unqueued(self, label: str, deadline: float | None) -> None:
        """With the lock held and no slot free: refuse a request that may not even wait (the
        queue is full: busy; its deadline passed already: expired)."""
        if self.waiting >= self._max_queue:
            self.refused[label] += 1
            raise ServiceBusy(
                f"all {self._slots} handler slots are busy and the queue is full "
                f"(max_queue = {self._max_queue})"
            )
        if deadline is not None and time.monotonic() >= deadline:
            self.expired[label] += 1
            raise DeadlineExceeded(
                "the deadline had passed when the request would have waited for a handler "
                "slot; it was not executed"
            )

    def expire(self, label: str = "") -> None:
        """Count a request not run because its deadline passed (outside the queue)."""
        with self._lock:
            self.expired[label] += 1

    def cancel(self, label: str = "") -> None:
        """Give back a slot whose request will not run after all (its deadline passed or its
        client left while it waited): counted in :attr:`expired`, not as served."""
        with self._lock:
            self.running -= 1
            self.expired[label] += 1
            if self.waiting:
                self._cond.notify()

    def load(self) -> ServerLoad:
        """A consistent snapshot of the running, waiting and refused counts."""
        with self._lock:
            return ServerLoad(
                self.running, self.waiting, dict(self.refused), dict(self.expired)
            )

    def release(self) -> None:
        """Give a slot back (and count the request as served)."""
        with self._lock:
            self.running -= 1
            if self._on_release is not None:
                self._on_release()
            if self.waiting:  # notify() is costly; skip it when nobody waits
                self._cond.notify()


class Watchdog:
    """Calls ``check`` every ``interval`` seconds in a thread of its own.

    One thread for the whole server, not a timer per request: the per-request cost is only
    storing a deadline that ``check`` compares with the clock.
    """

    def __init__(self, check: Callable[[], None], interval: float = 0.05) -> None:
        self._check = check
        self._interval = interval
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

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._check()
            except Exception:  # the watchdog must survive whatever goes wrong in one check
                from appd.logging import get_logger

                get_logger("appd.transport").exception("request deadline check failed")
