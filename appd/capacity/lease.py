"""Leases: a held slot of a capacity, kept alive in the background, released once.

A :class:`Lease` carries the fencing ``token`` the backend granted with it.  A
:class:`Renewer` thread (one per capacity and process) renews every lease every
``lease_ttl / 3`` seconds; when a renewal fails, or cannot be confirmed before the lease would
have expired on the server, the lease is *lost*: :attr:`Lease.lost` turns true, waiting on
:attr:`Lease.lost_event` returns, and the callbacks given to :meth:`Lease.on_lost` run (on the
renewer's thread).  The holder must stop using the resource then: another holder may already
have it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from appd.errors import CapacityError, CapacityUnavailable
from appd.logging import get_logger

if TYPE_CHECKING:
    from appd.capacity.backend import Backend, Grant

__all__ = ["Lease", "Renewer"]

log = get_logger("appd.capacity")


class Lease:
    """One held slot of capacity :attr:`capacity`; a context manager (sync and async) that
    releases it on exit.

    :ivar capacity: the capacity's name.
    :ivar token: the fencing token: strictly greater than every token the capacity granted
        before.  Hand it to the resource when it can check it, so a holder that lost its lease
        unawares is refused (see docs/capacity.md).
    :ivar holder: this lease's holder id (``host:pid:random``), as ``appd status`` shows it.
    """

    def __init__(
        self,
        capacity: str,
        grant: Grant,
        backend: Backend,
        renewer: Renewer,
        *,
        valid_until: float | None,
    ) -> None:
        self.capacity = capacity
        self.token = grant.token
        self.holder = grant.holder
        self._grant = grant
        self._backend = backend
        self._renewer = renewer
        self._valid_until = valid_until
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Lease], None]] = []
        self._released = False
        #: Set once the lease is lost (never set by an ordinary release).
        self.lost_event = threading.Event()
        renewer.add(self)

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._released else "held"
        return f"<Lease {self.capacity!r} token={self.token} {state}>"

    @property
    def lost(self) -> bool:
        """True once the lease was lost: renewal failed, or could not be confirmed in time."""
        if self.lost_event.is_set():
            return True
        if self._valid_until is not None and time.monotonic() >= self._valid_until:
            self._mark_lost("not renewed in time")
            return True
        return False

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran."""
        return self._released

    def on_lost(self, callback: Callable[[Lease], None]) -> None:
        """Call ``callback(lease)`` once when the lease is lost (at once if it already is).

        It runs on the renewer's thread: keep it short (close a connection, set a flag).
        """
        with self._lock:
            if not self.lost_event.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def check(self) -> None:
        """Raise :class:`~appd.errors.CapacityUnavailable` if the lease was lost."""
        if self.lost:
            raise CapacityUnavailable(
                f"capacity {self.capacity!r}: lease {self.token} was lost; stop using the "
                "resource"
            )

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing).  A backend that cannot be reached
        is logged, not raised: the slot then frees itself when its lease expires."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._renewer.discard(self)
        try:  # a lost lease too: its entry may linger until it expires
            self._backend.release(self._grant)
        except CapacityError as exc:
            log.warning("capacity release failed", capacity=self.capacity, error=str(exc))

    # -- called by the renewer ---------------------------------------------------------------

    def _confirmed(self, valid_until: float) -> None:
        if self._valid_until is not None:
            self._valid_until = valid_until

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self.lost_event.is_set() or self._released:
                return
            self.lost_event.set()
            callbacks, self._callbacks = self._callbacks, []
        log.warning("capacity lease lost", capacity=self.capacity, token=self.token,
                    reason=reason)
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("capacity lost-lease callback failed", capacity=self.capacity)

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Renewer:
    """Renews the leases of one capacity in this process, every ``interval`` seconds, on one
    daemon thread (started on first use, and again in a forked child)."""

    def __init__(self, name: str, backend: Backend, *, interval: float, ttl: float) -> None:
        self.name = name
        self.backend = backend
        self.interval = interval
        self.ttl = ttl
        self._due: dict[Lease, float] = {}
        self._cond = threading.Condition()
        self._pid = 0
        self._closed = False

    def add(self, lease: Lease) -> None:
        if self._pid != os.getpid() and self._pid:
            # A forked child: fresh state (the parent's lock may have been held at the fork),
            # and it renews its own leases, never its parent's.
            self._cond = threading.Condition()
            self._due = {}
            self._pid = 0
        with self._cond:
            self._due[lease] = time.monotonic() + self.interval
            if not self._pid:
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, name=f"appd-capacity-{self.name}", daemon=True
                ).start()
            self._cond.notify()

    def discard(self, lease: Lease) -> None:
        with self._cond:
            self._due.pop(lease, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        pid = os.getpid()
        cond = self._cond
        while True:
            with cond:
                while not self._closed and pid == self._pid:
                    now = time.monotonic()
                    due = [lease for lease, when in self._due.items() if when <= now]
                    if due:
                        break
                    wake = min(self._due.values(), default=now + 3600)
                    cond.wait(wake - now)
                else:
                    return
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        started = time.monotonic()
        try:
            held = self.backend.renew(lease._grant)
            reason = "no longer held"
        except Exception as exc:  # CapacityUnavailable, or anything else: not confirmed
            held, reason = False, str(exc) if isinstance(exc, CapacityError) else repr(exc)
        with self._cond:
            if lease not in self._due:
                return  # released meanwhile
            if not held:
                del self._due[lease]
            else:
                self._due[lease] = time.monotonic() + self.interval
        if held:
            lease._confirmed(started + self.ttl)
        else:
            with contextlib.suppress(Exception):
                lease._mark_lost(reason)
