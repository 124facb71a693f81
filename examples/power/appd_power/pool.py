"""A bounded pool of PDU connections, shared by the threads of one power service process.

At most ``size`` connections are ever open at once.  They are opened lazily, on first need,
in the process that uses the pool (create the pool in the service's ``setup()``, after fork,
never at import).  A thread that finds every connection in use waits for one to come back, for
at most ``acquire_timeout`` seconds, and never past its caller's deadline (inside a request,
``appd.time_remaining()``): then it raises ``DeadlineExceeded`` and the command is not sent;
nor is a command sent when the caller has less time left than a command takes the device (a
moving average of the last ones): its reply would come too late.  A connection the device
closed (idle timeout, device restart) is noticed, dropped and replaced by a fresh one; the
device's commands are idempotent, so a command cut off by a broken connection is sent once
more on a fresh one.

With a *capacity* (``[capacities.pdu]`` in the configuration) the limit holds across every
process and host: each session is opened under a lease of that capacity.  When its request is
done while other requests of this process are using the pool, the session stays with this
process, lease and all, for the next of them that needs one, until ``lease_hold`` seconds after
the lease's grant (opening a session costs the device about a tenth of a command's time); past
that it is closed and its lease released (an idle one by the pool's reaper thread), and when the
last request in the pool is done every idle session is, so that no idle session keeps a slot
another process is waiting for for long, and every process gets its turn.  One request at a
time per pool waits for a lease; the others wait for a session passed on, or for their turn to
wait for a lease.  The session is closed politely (the device has counted it out before the
lease goes back), and a lease found lost closes its session at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from appd import CapacityUnavailable, DeadlineExceeded, time_remaining
from appd_power.errors import PduBusy, PduError, PduUnavailable, PoolTimeout

if TYPE_CHECKING:
    from appd.capacity import Capacity, Lease

__all__ = ["PduConnection", "PduPool"]

#: Pause between attempts when the device answers ``ERR busy`` (its sessions from a previous
#: process may take a moment to close).
BUSY_RETRY_SECONDS: Final = 0.05
#: Seconds a leased session may pass from request to request in one process (see the module
#: docstring): short beside a request's wait for a lease, long beside opening a session.
LEASE_HOLD_SECONDS: Final = 0.1
#: Weight of the newest command in :attr:`PduPool.command_time` (a moving average).
COMMAND_TIME_WEIGHT: Final = 0.1
#: Seconds after its last sample that :attr:`PduPool.command_time` is forgotten: an estimate
#: that grew past every caller's time left (one very slow command) would otherwise stop every
#: command from being sent, and so from ever being corrected.
COMMAND_TIME_MEMORY: Final = 5.0


class PduConnection:
    """One session with the PDU: send a command line, read its one-line reply."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self._reader = sock.makefile("rb")
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        #: The capacity lease this session was opened under (None: no capacity).
        self.lease: Lease | None = None
        #: When the lease was granted (``time.monotonic()``).
        self.held_since = 0.0

    def hold(self, lease: Lease) -> None:
        """Tie the session to ``lease``: it is cut off if the lease is lost, and the lease is
        released when the session closes."""
        self.lease = lease
        self.held_since = time.monotonic()
        lease.on_lost(lambda _lease: self.abort())

    def abort(self) -> None:
        """Cut the session off now (a request in flight fails with PduUnavailable)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    @classmethod
    def open(cls, host: str, port: int, *, timeout: float = 5.0) -> PduConnection:
        """Connect and read the greeting; :class:`PduUnavailable` when refused or busy."""
        address = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise PduUnavailable(f"cannot connect to the PDU at {address}: {reason}") from None
        conn = cls(sock, address)
        try:
            hello = conn._read_line()
        except PduUnavailable:
            conn.close()
            raise
        if not hello.startswith("HELLO PDU"):
            conn.close()
            if hello == "ERR busy":
                raise PduBusy(f"the PDU at {address} is busy (all its sessions are in use)")
            raise PduUnavailable(f"the PDU at {address} greeted with {hello[:64]!r}")
        return conn

    def _read_line(self) -> str:
        try:
            line = self._reader.readline(1024)
        except OSError as exc:
            raise PduUnavailable(f"the PDU at {self.address} did not answer: {exc}") from None
        if not line.endswith(b"\n"):
            raise PduUnavailable(f"the PDU at {self.address} closed the connection")
        return line.decode("ascii", "replace").strip()

    def request(self, line: str) -> str:
        """Send one command; the reply after ``OK `` (:class:`PduError` for ``ERR``, and
        :class:`PduUnavailable` when the connection broke)."""
        try:
            self.sock.sendall(f"{line}\n".encode("ascii"))
        except OSError as exc:
            raise PduUnavailable(f"sending to the PDU at {self.address} failed: {exc}") from None
        reply = self._read_line()
        if reply.startswith("OK"):
            return reply[3:]
        if reply.startswith("ERR ") and reply not in ("ERR busy", "ERR idle timeout"):
            raise PduError(f"the PDU refused {line!r}: {reply[4:]}")
        raise PduUnavailable(f"the PDU at {self.address} ended the session: {reply[:64]!r}")

    def peer_closed(self) -> bool:
        """True when the device closed, or spoke unasked on, this idle connection (it is
        readable, or in error, while no command is in flight: one ``poll`` system call)."""
        try:
            return bool(self._poller.poll(0))
        except OSError:  # the descriptor is gone
            return True

    def close(self) -> None:
        """Close the session (the device counts it out).  Under a lease, first wait until the
        device has closed its side, so the device has counted the session out before the
        lease goes back and another holder connects."""
        lease, self.lease = self.lease, None
        if lease is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
                while self.sock.recv(4096):
                    pass
        with contextlib.suppress(OSError):
            self._reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()
        if lease is not None:
            lease.release()


class PduPool:
    """At most ``size`` connections to the PDU at ``host:port``, shared by threads.

    :param acquire_timeout: seconds to wait for a free connection (:class:`PoolTimeout` after).
    :param io_timeout: seconds to connect, and to wait for each reply.
    :param capacity: a capacity whose lease each session is opened under (None: the pool's
        ``size`` is the only bound, per process).
    :param lease_hold: seconds a leased session may pass from request to request in this
        process before it is closed and its lease released (0: after every request).
    """

    def __init__(
        self,
        host: str,
        port: int,
        size: int = 5,
        *,
        acquire_timeout: float = 10.0,
        io_timeout: float = 5.0,
        capacity: Capacity | None = None,
        lease_hold: float = LEASE_HOLD_SECONDS,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"the pool size must be an integer >= 1, not {size!r}")
        self.host = host
        self.port = port
        self.size = size
        self.acquire_timeout = float(acquire_timeout)
        self.io_timeout = float(io_timeout)
        self.capacity = capacity
        self.lease_hold = float(lease_hold)
        self._idle: list[PduConnection] = []
        self._open = 0  # idle + in use + being opened
        #: True while a request of this pool waits for a capacity lease (one at a time).
        self._leasing = False
        #: Requests using the pool now (waiting for a session or holding one).
        self._users = 0
        #: Set when a leased session goes idle: the reaper closes it once its hold is over.
        self._reap_due = threading.Event()
        self._reaper: threading.Thread | None = None
        self._cond = threading.Condition()
        #: When a lease could not be had because the capacity's backend failed, and how.
        self._failure: tuple[float, CapacityUnavailable] | None = None
        self._closed = False
        #: How long a command takes the device (a moving average of the last ones, seconds):
        #: a command is not sent when its caller has less time left than that.
        self.command_time = 0.0
        self._timed_at = 0.0  # when command_time last took a sample (monotonic)

    def __repr__(self) -> str:
        return f"<PduPool {self.host}:{self.port} open={self._open}/{self.size}>"

    @property
    def open_connections(self) -> int:
        """Connections open (or being opened) now."""
        return self._open

    def request(self, line: str) -> str:
        """Send one command on a pooled connection and return the reply after ``OK ``.

        A connection found broken is replaced and the command sent once more (every PDU
        command is idempotent).
        """
        with self._using():
            return self._request(line)

    def _wait_until(self) -> float:
        """How long a request may wait for a connection: ``acquire_timeout``, cut to the time
        its caller still waits (``appd.time_remaining()``: the deadline the web request's
        client sent), so that no PDU session is spent on a call nobody waits for."""
        left = time_remaining()
        wait = self.acquire_timeout if left is None else min(left, self.acquire_timeout)
        return time.monotonic() + wait

    def _request(self, line: str) -> str:
        deadline = self._wait_until()
        try:
            return self._attempt(line, deadline)
        except PduUnavailable as failed:  # the session broke: once more on a fresh one
            try:
                return self._attempt(line, deadline)
            except DeadlineExceeded:  # not "not executed": the first attempt may have run
                raise failed from None

    def _attempt(self, line: str, deadline: float) -> str:
        """Send ``line`` once on a pooled connection and return the reply."""
        conn = self._acquire(deadline)
        try:
            self._worth_sending(line)
            started = time.monotonic()
            reply = conn.request(line)
            self._time(started)
        except PduUnavailable:
            self._release(conn, broken=True)
            raise
        except (PduError, DeadlineExceeded):
            self._release(conn, broken=False)  # a refused command leaves the session good
            raise
        except BaseException:
            self._release(conn, broken=True)  # interrupted mid-exchange: state unknown
            raise
        self._release(conn, broken=False)
        return reply

    def _time(self, started: float) -> None:
        """Take a command that began at ``started`` and just ended into :attr:`command_time`
        (it replaces an estimate too old to trust rather than blending into it)."""
        now = time.monotonic()
        took = now - started
        if self._stale(started):  # judged when the command began
            self.command_time = took
        else:
            self.command_time += COMMAND_TIME_WEIGHT * (took - self.command_time)
        self._timed_at = now

    def _stale(self, at: float) -> bool:
        """True when :attr:`command_time` had no sample for :data:`COMMAND_TIME_MEMORY`
        seconds at ``at``."""
        return at - self._timed_at > COMMAND_TIME_MEMORY

    def _worth_sending(self, line: str) -> None:
        """:class:`~appd.DeadlineExceeded` when the caller has less time left than a command
        takes: its reply could only come after the caller gave up, so the device's time goes
        to the next caller instead."""
        left = time_remaining()
        if left is None:
            return
        takes = self.command_time
        if self._stale(time.monotonic()):
            takes = 0.0  # no recent sample: let this one measure the device again
        if left <= 0.0 or left < takes:
            raise DeadlineExceeded(
                f"{line.split()[0]!r} not sent to the PDU: {left * 1000:.0f} ms left, a "
                f"command takes about {takes * 1000:.0f} ms; it was not executed"
            )

    @contextlib.contextmanager
    def connection(self) -> Iterator[PduConnection]:
        """Hold one connection for several commands; it is dropped if it broke meanwhile."""
        with self._using():
            yield from self._connection()

    def _connection(self) -> Iterator[PduConnection]:
        conn = self._acquire(self._wait_until())
        try:
            self._worth_sending("CYCLE")
        except DeadlineExceeded:
            self._release(conn, broken=False)
            raise
        broken = True
        try:
            yield conn
            broken = False
        except PduError:
            broken = False
            raise
        finally:
            self._release(conn, broken=broken)

    def close(self) -> None:
        """Close the idle connections now, and every other one as it comes back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        self._reap_due.set()
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """Count a request as using the pool for the block."""
        with self._cond:
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1

    def _reap(self) -> None:
        """The reaper thread: close idle leased sessions whose hold is over, so their slots go
        back to the capacity even when no request of this process comes."""
        while True:
            self._reap_due.wait()
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [c for c in self._idle if c.lease is not None and self._hold_over(c, now)]
                for conn in due:
                    self._idle.remove(conn)
                self._open -= len(due)
                held = [c.held_since for c in self._idle if c.lease is not None]
                if not held:
                    self._reap_due.clear()
                if due:
                    self._cond.notify(len(due))
            for conn in due:
                conn.close()
            if held:
                time.sleep(max(0.001, min(held) + self.lease_hold - time.monotonic()))

    def _hold_over(self, conn: PduConnection, now: float) -> bool:
        return now - conn.held_since >= self.lease_hold

    def _acquire(self, deadline: float) -> PduConnection:
        while True:
            with self._cond:
                conn = self._take_or_reserve(deadline)
            if conn is not None:
                if conn.lease is not None and self._hold_over(conn, time.monotonic()):
                    self._release(conn, broken=True)  # its turn is over: the lease goes back
                    continue
                if not conn.peer_closed():
                    return conn
                self._release(conn, broken=True)
                continue
            lease = None
            try:
                if self.capacity is not None:
                    wait = min(self.capacity.acquire_timeout, deadline - time.monotonic())
                    try:
                        lease = self.capacity.acquire_lease(timeout=max(0.0, wait))
                    except CapacityUnavailable as failed:
                        with self._cond:  # those waiting behind this request fail with it
                            self._failure = (time.monotonic(), failed)
                        raise
                    finally:
                        with self._cond:  # the next request may wait for a lease now
                            self._leasing = False
                            self._cond.notify()
                conn = PduConnection.open(self.host, self.port, timeout=self.io_timeout)
            except BaseException as exc:
                if lease is not None:
                    lease.release()
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                if not isinstance(exc, PduBusy) or time.monotonic() + BUSY_RETRY_SECONDS > deadline:
                    raise
                time.sleep(BUSY_RETRY_SECONDS)
                continue
            if lease is not None:
                conn.hold(lease)
            return conn

    def _take_or_reserve(self, deadline: float) -> PduConnection | None:
        """Under the lock: an idle connection, or None having reserved a slot to open one.

        A capacity backend that failed while this request waited fails it too, at once: each
        queued request would otherwise wait out a backend timeout of its own in turn."""
        entered = time.monotonic()
        if time_remaining() == 0.0:  # not even a free session is worth taking now
            raise DeadlineExceeded(
                "the call's deadline passed before it took a PDU connection; it was not executed"
            )
        while True:
            if self._closed:
                raise PduUnavailable("the PDU pool is closed")
            if self._failure is not None and self._failure[0] >= entered:
                raise self._failure[1]
            if self._idle:
                return self._idle.pop()
            if self._open < self.size and not self._leasing:
                self._open += 1
                self._leasing = self.capacity is not None
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 and time_remaining() == 0.0:
                raise DeadlineExceeded(
                    f"no PDU connection became free before the call's deadline ({self.size} in "
                    "use); it was not executed"
                )
            if remaining <= 0:
                raise PoolTimeout(
                    f"no PDU connection became free within {self.acquire_timeout} s "
                    f"({self.size} in use)"
                )
            self._cond.wait(remaining)

    def _release(self, conn: PduConnection, *, broken: bool) -> None:
        if conn.lease is not None and not broken:
            lone: list[PduConnection] = []
            with self._cond:
                keep = (
                    self._users > 1  # another request of this process may take it at once
                    and not self._closed
                    and not self._hold_over(conn, time.monotonic())
                )
                if not keep and self._users <= 1:  # the last request: no session stays idle
                    lone = [c for c in self._idle if c.lease is not None]
                    for idle in lone:
                        self._idle.remove(idle)
                    self._open -= len(lone)
                if keep:
                    self._idle.append(conn)  # for this process's next request, lease and all
                    self._cond.notify()
                    if self._reaper is None:
                        self._reaper = threading.Thread(
                            target=self._reap, name="pdu-pool-reaper", daemon=True
                        )
                        self._reaper.start()
            if keep:
                self._reap_due.set()
                return
            for idle in lone:
                idle.close()
        if broken or conn.lease is not None:
            # Closed before it stops counting: a leased session past its hold, or with no other
            # request of this process to take it, is not kept, so its slot goes back to every
            # process waiting for one.
            conn.close()
            with self._cond:
                self._open -= 1
                self._cond.notify()
            return
        with self._cond:
            closed = self._closed
            if closed:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._cond.notify()
        if closed:
            conn.close()
