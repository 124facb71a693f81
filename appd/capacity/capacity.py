"""Named capacities: at most ``limit`` holders of a resource at once, across processes and hosts.

:class:`Capacity` is what a service uses::

    with self.capacity("pdu").acquire(timeout=2.0) as lease:
        use_the_pdu(fencing_token=lease.token)

    async with self.capacity("pdu").acquire() as lease:   # in async handlers
        ...

It owns the waiting loop (one attempt, then wait for a wake-up or a jittered pause, until the
deadline) over a backend that makes single attempts, so both backends behave alike: past the
timeout :class:`~appd.errors.CapacityTimeout`, a backend that cannot be reached
:class:`~appd.errors.CapacityUnavailable`, never a grant beyond the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Mapping
from types import TracebackType

from appd.capacity.backend import Backend, CapacityStatus, new_holder_id
from appd.capacity.lease import Lease, Renewer
from appd.config import CapacityConfig
from appd.errors import CapacityError, CapacityTimeout, ConfigurationError, DeadlineExceeded
from appd.scope import current_deadline

__all__ = ["Acquire", "Capacities", "Capacity", "open_backend"]


def open_backend(config: CapacityConfig) -> Backend:
    """The backend ``config`` names: local slot files, or Redis (imported only then)."""
    if config.is_local:
        from appd.capacity.local import LocalBackend

        return LocalBackend(config.name, config.limit, config.directory)
    from appd.capacity.redis_backend import RedisBackend

    return RedisBackend(config.name, config.limit, config.backend, config.lease_ttl)


class Capacity:
    """One named capacity in this process: acquire leases, see its status.

    :param config: the ``[capacities.<name>]`` table.
    :param backend: the store of holders (by default the one ``config`` names).
    """

    def __init__(self, config: CapacityConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.name = config.name
        self.limit = config.limit
        self.backend = backend if backend is not None else open_backend(config)
        self._renewer = Renewer(
            config.name, self.backend, interval=config.lease_ttl / 3, ttl=config.lease_ttl
        )

    def __repr__(self) -> str:
        return f"<Capacity {self.name!r} limit={self.limit} {self.backend.label}>"

    @property
    def acquire_timeout(self) -> float:
        """Seconds :meth:`acquire` waits when given no timeout."""
        return self.config.acquire_timeout

    def acquire(self, timeout: float | None = None) -> Acquire:
        """A context manager (``with`` or ``async with``) that holds a lease for its block.

        :param timeout: seconds to wait for a slot (default: the capacity's
            ``acquire_timeout``; 0 tries once).
        """
        return Acquire(self, timeout)

    def acquire_lease(self, timeout: float | None = None) -> Lease:
        """Wait for a slot and return its lease; the caller releases it (``lease.release()``).

        :raises CapacityTimeout: no slot came free within ``timeout`` seconds.
        :raises DeadlineExceeded: the call's deadline (the request being handled, or an
            ``appd.deadline`` scope) came first: the wait stops then, not at ``timeout``.
        :raises CapacityUnavailable: the backend cannot be reached.
        """
        wait = self.config.acquire_timeout if timeout is None else max(0.0, float(timeout))
        deadline = time.monotonic() + wait
        # Inside a request (or an ``appd.deadline`` scope): never wait past the caller.
        call_deadline = current_deadline()
        cut_short = call_deadline is not None and call_deadline < deadline
        if cut_short:
            deadline = call_deadline  # type: ignore[assignment]
            if deadline <= time.monotonic():  # nobody waits for what the lease would guard
                raise DeadlineExceeded(
                    f"capacity {self.name!r}: the call's deadline had passed before a slot was "
                    "asked for; it was not executed"
                )
        holder = new_holder_id()
        attempt = 0
        try:
            while True:
                started = time.monotonic()
                grant = self.backend.try_acquire(holder)
                if grant is not None:
                    expires = self.backend.leases_expire
                    valid_until = started + self.config.lease_ttl if expires else None
                    return Lease(
                        self.name, grant, self.backend, self._renewer, valid_until=valid_until
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0 and cut_short:
                    raise DeadlineExceeded(
                        f"capacity {self.name!r}: the call's deadline passed while it waited "
                        f"for a slot (all {self.limit} are held); it was not executed"
                    )
                if remaining <= 0:
                    raise CapacityTimeout(
                        f"capacity {self.name!r}: no slot came free within {wait:g} s "
                        f"(all {self.limit} are held)"
                    )
                self.backend.wait(holder, remaining, attempt)
                attempt += 1
        except BaseException:
            with contextlib.suppress(CapacityError):
                self.backend.withdraw(holder)
            raise

    def status(self) -> CapacityStatus:
        """Holders, limit and waiters now."""
        return self.backend.status()

    def check(self) -> None:
        """Raise :class:`~appd.errors.CapacityUnavailable` unless the backend answers."""
        self.backend.check()

    def close(self) -> None:
        """Stop renewing and let go of the backend's connections (held leases are not
        released: their holders' processes are ending)."""
        self._renewer.close()
        self.backend.close()


class Acquire:
    """The pending acquisition :meth:`Capacity.acquire` returns: the lease is taken on entry
    (in a worker thread for ``async with``, so the event loop never blocks) and released on
    exit."""

    def __init__(self, capacity: Capacity, timeout: float | None) -> None:
        self.capacity = capacity
        self.timeout = timeout
        self.lease: Lease | None = None

    def __enter__(self) -> Lease:
        self.lease = self.capacity.acquire_lease(self.timeout)
        return self.lease

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.lease is not None:
            self.lease.release()

    async def __aenter__(self) -> Lease:
        # The wait runs on a thread of its own, not in the loop's default executor: a few
        # waiters must never fill that executor and so hold up the releases they wait for.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lease] = loop.create_future()
        handover = _Handover()

        def acquire() -> None:
            try:
                lease = self.capacity.acquire_lease(self.timeout)
            except Exception as exc:
                _settle_soon(loop, future, None, exc)
                return
            if handover.keep(lease):
                _settle_soon(loop, future, lease, None)

        context = contextvars.copy_context()  # the task's deadline bounds the wait
        threading.Thread(
            target=context.run, args=(acquire,),
            name=f"appd-capacity-{self.capacity.name}-acquire", daemon=True,
        ).start()
        try:
            self.lease = await future
        except BaseException:
            # The task gave up (cancelled, or closed with its loop): a lease granted meanwhile
            # (or later) goes back at once, even when the hand-over above never runs.
            handover.abandon()
            raise
        return self.lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.lease is not None:
            self.lease.release()  # one short round trip at most: not worth a thread


class _Handover:
    """A lease on its way from the acquiring thread to a task that may give up meanwhile:
    whichever of the two comes second releases it, so no slot outlives an abandoned wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._abandoned = False

    def keep(self, lease: Lease) -> bool:
        """The acquiring thread: False (and the lease released) when the task gave up."""
        with self._lock:
            if not self._abandoned:
                self._lease = lease
                return True
        lease.release()
        return False

    def abandon(self) -> None:
        """The task: gives up; a lease already granted is released."""
        with self._lock:
            self._abandoned = True
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Lease],
    lease: Lease | None,
    exc: Exception | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, lease, exc)
    except RuntimeError:  # the loop is closed: nobody will use the lease
        if lease is not None:
            lease.release()


def _settle(future: asyncio.Future[Lease], lease: Lease | None, exc: Exception | None) -> None:
    """On the loop: hand the outcome to the waiting task.  (A task that was cancelled meanwhile
    has given its lease back already: see :class:`_Handover`.)"""
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert lease is not None
        future.set_result(lease)


class Capacities:
    """The configured capacities of this process by name, opened on first use."""

    def __init__(self, configs: Mapping[str, CapacityConfig]) -> None:
        self.configs = dict(configs)
        self._open: dict[str, Capacity] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    def get(self, name: str) -> Capacity:
        """Capacity ``name``; :class:`~appd.errors.ConfigurationError` when none is configured."""
        with self._lock:
            if name not in self._open:
                if name not in self.configs:
                    known = ", ".join(sorted(self.configs)) or "none"
                    raise ConfigurationError(
                        f"no capacity {name!r} is configured (add a [capacities.{name}] table; "
                        f"configured: {known})"
                    )
                self._open[name] = Capacity(self.configs[name])
            return self._open[name]

    def close(self) -> None:
        """Close every opened capacity."""
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for capacity in opened:
            capacity.close()
