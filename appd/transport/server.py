"""The socket server of wire protocol v2.

Design (measured; see docs/performance.md): one thread runs ``epoll`` over the listening socket
and every connection still in its handshake, so a thousand silent or slow connections cost file
descriptors, not threads; it is scheduled so that a flood of connections or hellos cannot lock a
prompt client out (see docs/protocol.md, "Handshakes under a flood").  Once authenticated, a
request is served by the thread that read it, which runs the handler *itself* and writes the
reply: the common path never hands a request from one thread to another.  With
``concurrency = 1`` one thread serves every authenticated connection
(:mod:`appd.transport.serving_loop`); otherwise each has a thread of its own.  A
:class:`~appd.transport.limits.Limiter` bounds how many handlers run at once (``concurrency``)
and how many wait; a single watchdog thread enforces ``request_timeout`` (and hands the serving
loop on when one request holds it).  ``frame_timeout`` and ``write_timeout`` bound how long a
peer that trickles a frame, or never reads its replies, can hold a connection or a thread.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from appd.errors import DeadlineExceeded, ProtocolError, RequestTimeout, ServiceBusy
from appd.logging import get_logger
from appd.scope import reset_scope, set_scope
from appd.transport.errorlog import HandlerErrorLog, clip
from appd.transport.heap import TRIM_AFTER, trim_heap
from appd.transport.limits import Limiter, ServerLoad, Watchdog
from appd.transport.protocol import (
    BadRequest,
    FrameDecoder,
    ServerCredentials,
    ServerHandshake,
    Session,
    UnsupportedVersion,
    decode_scoped_request,
    encode_bye,
    encode_deadline,
    encode_error,
    encode_reply,
    max_objects,
)
from appd.transport.request import LocalCounter, Request, RequestCounter, RequestHandler
from appd.transport.serving_loop import ServingLoop
from appd.transport.sockopts import set_kernel_timeouts, set_nodelay, set_send_timeout

__all__ = ["AcceptGate", "SecureSocketServer", "ServerSettings", "peer_name"]

log = get_logger("appd.transport")

#: How often the accept loop looks at the quit flag and the handshake deadlines.
ACCEPT_TICK = 0.05
#: How often an idle connection thread wakes to check for shutdown and the idle timeout.
CONNECTION_TICK = 0.25
#: Bytes asked of the kernel per receive.
RECV_SIZE = 64 * 1024
#: Bytes asked of the kernel per receive during a handshake (its frames are tiny).
HANDSHAKE_RECV_SIZE = 4096
#: Connections accepted per turn of the accept loop before it serves the handshakes in progress.
ACCEPT_BURST = 64
#: Unfinished handshakes kept at once (at least ``max_connections``; at most a quarter of the
#: process's file descriptor limit).
HANDSHAKE_SLOTS = 1024
#: Seconds between two summary lines of connections dropped during their handshake.
DROP_LOG_INTERVAL = 10.0
#: Failed authentications logged one line each per DROP_LOG_INTERVAL; the rest are counted.
AUTH_FAILURES_LOGGED = 10
#: The summary's reason for failed authentications past AUTH_FAILURES_LOGGED.
AUTH_FAILED_REASON = "authentication failed"


class AcceptGate(Protocol):
    """What a supervised process tells its server: whether to take one more connection, and
    where its heartbeat goes.

    With a gate the server also treats its listener as shared with sibling processes: it
    closes its copy the moment it stops, so new connections go to the processes still serving
    (or are refused at once when none is) instead of waiting in a queue nobody reads.
    """

    def beat(self) -> None:
        """Called on every turn of the accept loop (several times a second)."""
        ...

    def may_accept(self, connections: int) -> bool:
        """True when this process, holding ``connections`` open ones, should accept another."""
        ...


@dataclass(frozen=True)
class ServerSettings:
    """The limits and secrets the server runs with (read from the service at serve time)."""

    name: str
    psk: bytes = field(repr=False)
    users: Mapping[str, str] = field(repr=False)
    concurrency: int = 1
    max_queue: int = 64
    queue_timeout: float | None = 10.0
    max_connections: int = 256
    max_frame_size: int = 16 * 1024 * 1024
    handshake_timeout: float = 5.0
    idle_timeout: float | None = 300.0
    request_timeout: float | None = 60.0
    shutdown_grace: float = 10.0
    #: Seconds a frame may take to arrive once its first byte has.
    frame_timeout: float = 10.0
    #: Seconds a reply may take to be written; past it the connection is dropped.
    write_timeout: float = 10.0
    #: Permissions of a Unix socket file (applied by :func:`~appd.transport.listen.bind_listener`).
    socket_mode: int = 0o600


def peer_name(address: Any) -> str:
    """``host:port`` for a TCP peer, ``unix`` for a Unix-socket peer."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "unix"


class _Pending:
    """A connection still in its handshake (owned by the accept loop)."""

    __slots__ = ("address", "deadline", "decoder", "fd", "greeted", "handshake", "sock", "turn")

    def __init__(
        self, sock: socket.socket, address: Any, deadline: float, turn: int
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.deadline = deadline
        #: Created with the client hello: a connection that never sends one costs no nonce.
        self.handshake: ServerHandshake | None = None
        #: When the server hello was sent (0.0: the client hello has not arrived yet).
        self.greeted = 0.0
        #: The accept turn that took this connection in (never evicted during that same turn).
        self.turn = turn
        # A hello or an auth frame is small; anything claiming more is not a client.
        self.decoder = FrameDecoder(_HANDSHAKE_FRAME_LIMIT)


#: Largest frame read before authentication.
_HANDSHAKE_FRAME_LIMIT = 64 * 1024


class DropLog:
    """Counts connections dropped during their handshake and logs them as one summary line at
    most every :data:`DROP_LOG_INTERVAL` seconds: a flood costs a counter increment per
    connection, never a log line each.

    Failed authentications matter to an operator one by one (a client with a stale password),
    so the first :data:`AUTH_FAILURES_LOGGED` of each interval get a line of their own
    (``authentication failed``, with the peer); those past it are only counted.
    """

    def __init__(self, service: str, interval: float = DROP_LOG_INTERVAL) -> None:
        self.service = service
        self.interval = interval
        #: Drops by reason since the last summary line.
        self.counts: dict[str, int] = {}
        self._next = 0.0
        self._auth_window_end = 0.0
        self._auth_lines_left = 0

    def note(self, reason: str, now: float) -> None:
        """Count one dropped connection; log now if the last summary is old enough."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if now >= self._next:
            self.flush(now)

    def auth_failed(self, peer: str, now: float) -> None:
        """A failed authentication: a line of its own while this interval allows, else
        counted like any other drop."""
        if now >= self._auth_window_end:
            self._auth_window_end = now + self.interval
            self._auth_lines_left = AUTH_FAILURES_LOGGED
        if self._auth_lines_left > 0:
            self._auth_lines_left -= 1
            log.warning("authentication failed", service=self.service, peer=peer)
        else:
            self.note(AUTH_FAILED_REASON, now)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Log what was counted since the last summary (when due, or ``force``)."""
        if not self.counts or (now < self._next and not force):
            return
        counts, self.counts = self.counts, {}
        self._next = now + self.interval
        log.warning(
            "connections dropped during handshake", service=self.service,
            dropped=sum(counts.values()), reasons=counts,
        )


class SecureSocketServer:
    """Serves one listening socket until ``should_stop()`` is true, then drains."""

    def __init__(
        self,
        settings: ServerSettings,
        handler: RequestHandler,
        listener: socket.socket,
        *,
        counter: RequestCounter | None = None,
        gate: AcceptGate | None = None,
        credentials: ServerCredentials | None = None,
    ) -> None:
        """:param handler: called with each request; its reply (or exception) is sent back.
        :param counter: counts each answered request (default: a :class:`LocalCounter`).
        :param gate: set in a supervised process (see :class:`AcceptGate`).
        :param credentials: ``settings``' keys, derived already (default: derived here)."""
        self.settings = settings
        self.handler = handler
        self.counter: RequestCounter = LocalCounter() if counter is None else counter
        self.listener = listener
        self.gate = gate
        self._listening = False
        #: Derived once (scrypt per user), not per connection.
        self.credentials = (
            ServerCredentials(settings.psk, settings.users) if credentials is None else credentials
        )
        #: Objects one request may decode to (see :func:`~appd.transport.protocol.max_objects`).
        self.object_limit = max_objects(settings.max_frame_size)
        #: Handshakes in progress: those still waiting for their client hello, and those
        #: answered (waiting for the authentication frame); each oldest first.
        self._silent: OrderedDict[int, _Pending] = OrderedDict()
        self._greeted: OrderedDict[int, _Pending] = OrderedDict()
        #: Handshakes kept at once: the longer a flood takes to cycle through them, the longer a
        #: real client has to answer its server hello.  Bounded by the descriptors available.
        self.handshake_slots = _handshake_slots(settings.max_connections)
        self._turn = 0
        self._epoll: select.epoll
        #: Set when a connection has finished with a large frame; the accept loop then gives the
        #: freed memory back (see :mod:`appd.transport.heap`).  Set at first too: what the
        #: process's start freed goes back as it begins serving.
        self.trim_due = True
        self.drops = DropLog(settings.name)
        self.errors = HandlerErrorLog(settings.name)
        self._connections: set[_Connection] = set()
        self._conn_lock = threading.Lock()
        #: Notified whenever a connection ends (shutdown waits on it).
        self._conn_ended = threading.Condition(self._conn_lock)
        self.stopping = threading.Event()
        self.limiter = Limiter(
            settings.concurrency, settings.max_queue, settings.queue_timeout, self.counter.count
        )
        #: With one handler at a time, one thread serves every connection (see serving_loop).
        self.loop = ServingLoop() if settings.concurrency == 1 else None
        watched = settings.request_timeout or self.loop is not None
        self.watchdog = Watchdog(self._check_deadlines) if watched else None

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self.loop is not None:
            self.loop.check(now)
        if not self.settings.request_timeout:
            return
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            conn.expire_if_overdue(now)

    def load(self) -> ServerLoad:
        """Handlers running, requests queued, and requests refused busy (by command), now."""
        return self.limiter.load()

    # -- accept loop -------------------------------------------------------------------------

    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Accept, handshake and dispatch until ``should_stop()``; then finish in-flight
        requests within ``shutdown_grace`` seconds and return."""
        if self.watchdog is not None:
            self.watchdog.start()
        self.listener.setblocking(False)
        # epoll itself: closing a socket is enough to forget it, which keeps dropping one of a
        # flood of connections to a dictionary removal and a close.
        self._epoll = epoll = select.epoll()
        listen_fd = self.listener.fileno()
        pending_of, gate = self._pending_of, self.gate
        try:
            while not should_stop():
                if gate is not None:
                    gate.beat()
                self._listen(gate is None or gate.may_accept(self._open_count()))
                listening = False
                # Handshakes in progress first: a client answering its server hello is served
                # before the next burst of new connections is taken in.
                for fd, _ in epoll.poll(ACCEPT_TICK):
                    if fd == listen_fd:
                        listening = True
                    elif (pending := pending_of(fd)) is not None:
                        self._advance(pending)
                if listening and self._listening:
                    self._accept_burst()
                now = time.monotonic()
                self._expire_handshakes(now)
                self.drops.flush(now)
                self.errors.flush(now)
                if self.trim_due:
                    self.trim_due = False
                    trim_heap()
        finally:
            self._listen(False)
            if gate is not None:
                # Shared with other processes: release it now, not after the drain.
                self.listener.close()
            # Unfinished handshakes are closed: their clients never sent a request, so they
            # connect again, to a process still serving.
            for pending in [*self._silent.values(), *self._greeted.values()]:
                self._drop(pending)
            epoll.close()
            self.drops.flush(time.monotonic(), force=True)
            self.errors.flush(time.monotonic(), force=True)
            self._drain()

    def _open_count(self) -> int:
        return len(self._silent) + len(self._greeted) + len(self._connections)

    def _listen(self, on: bool) -> None:
        """Watch the listener for new connections, or stop watching it."""
        if on and not self._listening:
            self._epoll.register(self.listener.fileno(), select.EPOLLIN)
        elif not on and self._listening:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(self.listener.fileno())
        self._listening = on

    def _pending_of(self, fd: int) -> _Pending | None:
        pending = self._greeted.get(fd)
        return self._silent.get(fd) if pending is None else pending

    def _accept_burst(self) -> None:
        """Take in up to :data:`ACCEPT_BURST` connections, reading each one's hello at once
        when it has already arrived (the common case for a real client).  Kept lean: during a
        flood, what this costs per connection decides whether the kernel's accept queue
        overflows (and drops real clients' connection attempts with it)."""
        self._turn += 1
        turn = self._turn
        silent, greeted, slots = self._silent, self._greeted, self.handshake_slots
        accept, register, advance = self.listener.accept, self._epoll.register, self._advance
        gate = self.gate
        now = time.monotonic()
        deadline = now + self.settings.handshake_timeout
        for _ in range(ACCEPT_BURST):
            if gate is not None and not gate.may_accept(self._open_count()):
                self._listen(False)  # above its share: leave the rest to siblings
                return
            if len(silent) + len(greeted) >= slots and not self._make_room(now, turn):
                return  # the rest wait in the kernel's queue until the next turn
            try:
                sock, address = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving those we have
                if exc.errno == errno.EINVAL:
                    # The listener was shut down (its service is stopping): nothing to accept.
                    self._listen(False)
                    return
                self.drops.note(f"accept failed: {exc.strerror}", now)
                return
            # The socket stays blocking (as served connections are): handshake reads and
            # writes pass MSG_DONTWAIT instead, which saves a system call per connection.
            pending = _Pending(sock, address, deadline, turn)
            silent[pending.fd] = pending
            if advance(pending):
                register(pending.fd, select.EPOLLIN)

    def _make_room(self, now: float, turn: int) -> bool:
        """All :attr:`handshake_slots` are taken: free one by dropping the oldest connection
        that has not sent its hello, else the oldest answered one; never one taken in during
        this very turn.  False: nothing may be dropped."""
        for table in (self._silent, self._greeted):
            if table:
                oldest = next(iter(table.values()))
                if oldest.turn != turn:
                    self._drop(oldest, "handshake backlog full", now)
                    return True
        return False

    def _drop(self, pending: _Pending, reason: str | None = None, now: float = 0.0) -> None:
        if self._silent.pop(pending.fd, None) is None:
            self._greeted.pop(pending.fd, None)
        if reason is not None:
            self.drops.note(reason, now or time.monotonic())
        pending.sock.close()  # which also takes it out of the epoll set

    def _expire_handshakes(self, now: float) -> None:
        for table in (self._silent, self._greeted):
            while table:
                pending = next(iter(table.values()))
                if pending.deadline > now:
                    break
                self._drop(pending, "handshake timeout", now)

    def _advance(self, pending: _Pending) -> bool:
        """Read what the handshaking client sent and act on it; False when the connection was
        dropped or handed on (it must not stay registered)."""
        try:
            data = pending.sock.recv(HANDSHAKE_RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._drop(pending, f"receive failed: {exc.strerror}")
            return False
        if not data:
            self._drop(pending, "client closed")
            return False
        pending.decoder.feed(data)
        try:
            while (body := pending.decoder.next_frame()) is not None:
                if not pending.greeted:
                    if not self._hello(pending, body):
                        return False
                else:
                    self._authenticate(pending, body)
                    return False
        except UnsupportedVersion as exc:
            _send_small(pending.sock, exc.reply)
            self._drop(pending, "unsupported protocol version")
            return False
        except ProtocolError:
            self._drop(pending, "not an appd handshake")
            return False
        return True

    def _hello(self, pending: _Pending, body: bytes) -> bool:
        # The refusal comes first and costs nothing: no key is derived for a client hello.
        with self._conn_lock:
            busy = len(self._connections) >= self.settings.max_connections
        if busy or self.stopping.is_set():
            _send_small(pending.sock, ServerHandshake.busy_hello())
            self._drop(pending, "max_connections reached")
            return False
        pending.handshake = handshake = ServerHandshake(self.credentials)
        if not _send_small(pending.sock, handshake.on_client_hello(body)):
            self._drop(pending, "client not reading")
            return False
        del self._silent[pending.fd]
        pending.greeted = time.monotonic()
        self._greeted[pending.fd] = pending
        return True

    def _authenticate(self, pending: _Pending, body: bytes) -> None:
        assert pending.handshake is not None
        outcome = pending.handshake.on_auth(body)
        sent = _send_small(pending.sock, outcome.reply)
        if outcome.session is None or outcome.username is None or not sent:
            if sent:
                self.drops.auth_failed(peer_name(pending.address), time.monotonic())
                self._drop(pending)
            else:
                self._drop(pending, "client not reading")
            return
        self._greeted.pop(pending.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(pending.fd)
        set_nodelay(pending.sock)
        conn = _Connection(
            self, pending.sock, peer_name(pending.address), outcome.username, outcome.session,
            pending.decoder.take_buffer(),
        )
        with self._conn_lock:
            self._connections.add(conn)
        conn.start()

    # -- shutdown ----------------------------------------------------------------------------

    def _drain(self) -> None:
        self.stopping.set()
        with self._conn_ended:
            self._conn_ended.wait_for(
                lambda: not self._connections, self.settings.shutdown_grace
            )
            left = list(self._connections)
        for conn in left:
            log.warning(
                "request still running after shutdown_grace; closing its connection",
                service=self.settings.name, peer=conn.peer,
            )
            conn.abort()
        if self.loop is not None:
            self.loop.stop()
        if self.watchdog is not None:
            self.watchdog.stop()

    def forget(self, conn: _Connection) -> None:
        """Called as a connection ends."""
        with self._conn_lock:
            self._connections.discard(conn)
            self._conn_ended.notify_all()


#: SO_LINGER on, zero seconds: close resets the connection and drops unsent data.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _handshake_slots(max_connections: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = soft // 4 if soft != resource.RLIM_INFINITY else HANDSHAKE_SLOTS
    return max(max_connections, min(HANDSHAKE_SLOTS, room))


def _send_small(sock: socket.socket, frame: bytes) -> bool:
    """Send a handshake frame without blocking; False if it did not all fit."""
    try:
        return sock.send(frame, socket.MSG_DONTWAIT) == len(frame)
    except OSError:
        return False


class _Connection:
    """An authenticated connection and the thread that serves it."""

    def __init__(
        self,
        server: SecureSocketServer,
        sock: socket.socket,
        peer: str,
        username: str,
        session: Session,
        buffered: bytes,
    ) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.username = username
        self.session = session
        self.decoder = FrameDecoder(server.settings.max_frame_size)
        self.decoder.feed(buffered)
        self.send_lock = threading.Lock()
        self.closed = False
        #: When the running request's handler is due (0.0: none running); the watchdog reads it.
        self.deadline = 0.0
        self.request: Request | None = None
        self.abandoned = False
        # Looked up once per connection rather than once per request.
        self.open = session.open
        self.seal_frame = session.seal_frame
        self.limiter = server.limiter
        self.handler = server.handler
        #: Seconds a handler may run (0.0: unwatched).
        self.timeout = server.settings.request_timeout or 0.0
        self.loop = server.loop
        #: What the limiter calls before a request waits: hand the serving loop on.
        self.before_wait = self.hand_off if self.loop is not None else None
        settings = server.settings
        self.object_limit = server.object_limit
        self.frame_timeout = settings.frame_timeout
        self.write_timeout = settings.write_timeout
        self.idle_timeout = settings.idle_timeout
        #: When the last request was served: the idle clock.  Bytes of a frame still arriving
        #: do not reset it (a peer trickling a frame byte by byte is not "active").
        self.last_activity = time.monotonic()
        #: When the first byte of the frame still being received arrived (0.0: none pending).
        self.frame_started = time.monotonic() if buffered else 0.0

    def start(self) -> None:
        """Switch the socket to blocking with a receive tick and the write timeout, and start
        serving: from the server's loop, or from a thread of the connection's own."""
        # The receive wakes every tick to notice shutdown, the idle timeout and frame deadline.
        set_kernel_timeouts(self.sock, CONNECTION_TICK, self.write_timeout)
        try:
            if self.loop is not None:
                self.loop.add(self)
            else:
                threading.Thread(
                    target=self._run, name=f"appd-conn-{self.peer}", daemon=True
                ).start()
        except RuntimeError as exc:  # no thread to be had (a thread limit): nothing was read
            log.error(
                "closing connection: no thread can be started to serve it",
                service=self.server.settings.name, peer=self.peer, error=str(exc),
            )
            self.close()

    def on_readable(self) -> None:
        """Serving loop: read what arrived, serve each whole request in it; close the
        connection on end of file or a protocol violation."""
        decoder = self.decoder
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            if not data:
                self.close()
                return
            body = decoder.push(data)
            if body is None:  # part of a frame: its deadline runs from its first byte
                if not self.frame_started:
                    self.frame_started = time.monotonic()
                return
            while body is not None and not self.closed:
                if len(body) < TRIM_AFTER:
                    self._serve_body(body)  # (_serve_frame without a call, the common case)
                else:
                    self._serve_frame(body)
                body = decoder.next_frame() if decoder.buffer else None
        except (BlockingIOError, InterruptedError):
            return
        except (ProtocolError, OSError) as exc:
            self._log_end(exc)
            self.close()
            return
        except Exception:  # never let one connection end the loop that serves them all
            log.exception(
                "closing connection: unexpected error", service=self.server.settings.name,
                peer=self.peer,
            )
            self.close()
            return
        now = time.monotonic()
        self.last_activity = now
        self.frame_started = now if decoder.buffer else 0.0

    def _overdue(self, now: float) -> str | None:
        """``"frame"`` when a frame has been arriving for longer than ``frame_timeout``,
        ``"idle"`` when no request came for ``idle_timeout`` (and none is arriving)."""
        started = self.frame_started
        if started:
            return "frame" if now - started >= self.frame_timeout else None
        idle = self.idle_timeout
        if idle and now - self.last_activity >= idle:
            return "idle"
        return None

    def _end_overdue(self, reason: str) -> None:
        """Close a connection that :meth:`_overdue` found past a deadline (the caller closes)."""
        if reason == "frame":
            log.warning(
                "closing connection: frame not complete within frame_timeout",
                service=self.server.settings.name, peer=self.peer,
                frame_timeout=self.frame_timeout,
            )
        elif not self.decoder.pending():
            with contextlib.suppress(OSError):
                self._send(encode_bye(reason))

    def sweep(self, now: float) -> None:
        """Serving loop: say goodbye to a connection idle past ``idle_timeout``, or to every
        idle one when the server is stopping; close one whose frame is overdue."""
        if self.server.stopping.is_set():
            if not self.decoder.pending():
                with contextlib.suppress(OSError):
                    self._send(encode_bye("shutdown"))
            self.close()
            return
        reason = self._overdue(now)
        if reason is not None:
            self._end_overdue(reason)
            self.close()

    def close(self) -> None:
        """Close the connection and tell the server it ended."""
        self.abort()
        self.server.forget(self)

    def _log_end(self, exc: ProtocolError | OSError) -> None:
        name = self.server.settings.name
        if isinstance(exc, ProtocolError):
            log.warning(
                "closing connection: protocol violation",
                service=name, peer=self.peer, error=str(exc),
            )
        else:
            log.info("connection lost", service=name, peer=self.peer, error=str(exc))

    def _run(self) -> None:
        decoder, recv, stopping = self.decoder, self.sock.recv, self.server.stopping
        serve, monotonic = self._serve_frame, time.monotonic
        try:
            while not self.closed:
                body = decoder.next_frame() if decoder.buffer else None
                if body is None:
                    if stopping.is_set() and not decoder.buffer:
                        self._send(encode_bye("shutdown"))
                        return
                    try:
                        data: bytes | None = recv(RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        data = None  # the receive tick: look at the deadlines
                    if data == b"":
                        return
                    if data:
                        body = decoder.push(data)
                    if body is None:
                        now = monotonic()
                        if data and not self.frame_started:
                            self.frame_started = now
                        reason = self._overdue(now)
                        if reason is not None:
                            self._end_overdue(reason)
                            return
                        continue
                serve(body)
                now = monotonic()
                self.last_activity = now
                self.frame_started = now if decoder.buffer else 0.0
        except (ProtocolError, OSError) as exc:
            self._log_end(exc)
        finally:
            self.close()

    def _serve_frame(self, body: bytes) -> None:
        if len(body) < TRIM_AFTER:
            self._serve_body(body)
            return
        try:
            self._serve_body(body)
        finally:
            self.server.trim_due = True

    def _serve_body(self, body: bytes) -> None:
        """Serve one request frame, from opening it to writing the reply.  Written as one
        function on purpose, as the client's call is: it is every request's path, and each
        Python call it saves is CPU saved on both sides of the round trip
        (docs/performance.md); what is not the common case is in the methods it calls."""
        plaintext = self.open(body)  # raises before anything runs if it fails
        try:
            request_id, cmd, args, kwargs, within, rid = decode_scoped_request(
                plaintext, self.object_limit
            )
        except BadRequest as exc:
            del plaintext
            self._refuse(exc, len(body))
            return
        limiter = self.limiter
        if within is None:
            expires = None
        elif self.loop is None:
            expires = time.monotonic() + within
        else:
            # When the request arrived, as far as this process can tell: the earliest it may
            # have arrived while the loop's thread was busy with others (never before this
            # connection's previous reply was sent).
            arrived = self.loop.arrived
            last = self.last_activity
            expires = (arrived if arrived > last else last) + within
        request = Request(request_id, cmd, args, kwargs, self.username, self.peer, expires, rid)
        if within is not None and within <= 0.0:
            limiter.expire(cmd)
            self._send(encode_deadline(request_id, "the deadline had passed when the request "
                                                   "arrived; it was not executed"))
            return
        try:
            waited = limiter.acquire(cmd, expires, self.before_wait)
        except ServiceBusy as exc:
            self._send(encode_error(request_id, "busy", "ServiceBusy", str(exc)))
            return
        except DeadlineExceeded as exc:
            self._send(encode_deadline(request_id, str(exc)))
            return
        # Also when the slot was free: the serving loop's thread may read a request only after
        # the handlers before it, by when its deadline may have passed.
        now = time.monotonic()
        if (waited or (expires is not None and now >= expires)) and self._gave_up(
            request, expires
        ):
            return
        if self.timeout:
            self.request = request
            self.deadline = now + self.timeout
        reply = b""
        token = set_scope((expires, rid))  # what the handler (and its log records) sees
        try:
            try:
                result = self.handler(request)
            except BaseException as exc:
                reply = self._handler_failed(request, exc)
            else:
                try:
                    if (type(result) is tuple and len(result) == 2
                            and type(result[0]) is list and type(result[1]) is dict):
                        reply = encode_reply(request.id, result[0], result[1])  # the usual
                    else:
                        res_args, res_kwargs = _split_result(result)
                        reply = encode_reply(request.id, res_args, res_kwargs)
                except (TypeError, ValueError, OverflowError) as exc:
                    reply = self._unserializable(request, exc)
        finally:
            reset_scope(token)
            with self.send_lock:
                owned = not self.abandoned
                self.deadline = 0.0
                if owned:
                    limiter.release()
                    if reply and not self.closed:  # no reply was built: the connection closes
                        self._write(self.seal_frame(reply))

    def _refuse(self, exc: BadRequest, size: int) -> None:
        """Answer a request frame that :func:`decode_scoped_request` refused; a frame that is
        not a request at all is answered, then the connection closed (:class:`ProtocolError`)."""
        if size >= TRIM_AFTER:  # give a refused bomb's memory back before answering
            trim_heap()
        self._send(encode_error(exc.request_id, "bad_request", "ProtocolError", str(exc)))
        if exc.request_id is None:
            raise ProtocolError(str(exc)) from None

    def hand_off(self) -> None:
        """About to wait for a handler slot: the serving loop (if this connection is served
        by it) moves on to another thread, so other requests are read as they arrive."""
        if self.loop is not None:
            self.loop.hand_off(self)

    def _gave_up(self, request: Request, expires: float | None) -> bool:
        """After a wait in the queue: True (slot given back, nothing run) when the request's
        deadline passed meanwhile, answered with ``DeadlineExceeded``, or when its client has
        gone (closed its connection), so the slot goes to a request somebody still waits for."""
        if expires is not None and time.monotonic() >= expires:
            self.limiter.cancel(request.cmd)
            self._send(encode_deadline(
                request.id, "the deadline passed while the request waited for a handler slot; "
                "it was not executed"))
            return True
        try:
            gone = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            gone = False
        except OSError:
            gone = True
        if gone:
            self.limiter.cancel(request.cmd)
            log.info(
                "client gone before its queued request started; not running it",
                service=self.server.settings.name, cmd=clip(request.cmd), peer=self.peer,
                request_id=request.request_id,
            )
            self.close()
        return gone

    def _write(self, frame: bytes) -> None:
        """Write a whole frame within ``write_timeout`` (each send blocks at most that long, by
        the kernel's send timeout); :class:`TimeoutError` past it, so a peer that stops reading
        loses its connection instead of holding a thread.  The unsent rest is discarded (the
        connection is reset), not left in the kernel for the peer to trickle out."""
        sock = self.sock
        started = time.monotonic()
        try:
            sent = sock.send(frame)  # blocks at most write_timeout (SO_SNDTIMEO)
            if sent == len(frame):
                return
            deadline = started + self.write_timeout
            view = memoryview(frame)[sent:]
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BlockingIOError
                set_send_timeout(sock, left)  # the next send may only use what is left
                view = view[sock.send(view) :]
            set_send_timeout(sock, self.write_timeout)  # the whole of it for the next reply
        except BlockingIOError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            raise TimeoutError(
                f"reply not written within write_timeout ({self.write_timeout} s)"
            ) from None

    def _handler_failed(self, request: Request, exc: BaseException) -> bytes:
        """The error reply for a handler that raised ``exc``: a deadline that passed before
        it acted is counted as expired in the limiter, any other failure is recorded in the
        handler error log (the timeouts are not: the caller learns of them)."""
        if isinstance(exc, DeadlineExceeded):
            if exc.unstarted:
                # Raised in this process before the handler acted (e.g. a capacity wait cut
                # short by the deadline): the request was not executed.
                self.limiter.expire(request.cmd)
                return encode_deadline(request.id, str(exc))
            # A call to another service ran out of the deadline (or the handler said it may
            # have acted): its own caller may not be told "not executed".
            where = f"in a call it made to {exc.address}" if exc.address else f"({exc})"
            return encode_error(
                request.id, "timeout", "RequestTimeout",
                f"{request.cmd!r} ran out of its deadline {where}",
            )
        if isinstance(exc, RequestTimeout):
            return encode_error(request.id, "timeout", "RequestTimeout", str(exc))
        # SystemExit and the like too: out of a handler they are its failure, not the server's,
        # and would otherwise end the thread serving every connection.  (Handlers never run on
        # the main thread, so KeyboardInterrupt does not arrive here.)
        self.server.errors.failed(request.cmd, self.peer, exc, time.monotonic())
        return encode_error(request.id, "handler", type(exc).__name__, str(exc))

    def _unserializable(self, request: Request, exc: Exception) -> bytes:
        """The error reply for a handler result that cannot be encoded."""
        log.warning(
            "handler result cannot be sent", service=self.server.settings.name,
            cmd=clip(request.cmd), error=clip(str(exc)),
        )
        return encode_error(
            request.id,
            "unserializable",
            type(exc).__name__,
            f"the result of {request.cmd!r} cannot be serialized: {exc}",
        )

    def expire_if_overdue(self, now: float) -> None:
        """Watchdog: abandon the running request if it overran ``request_timeout``.

        Python cannot kill the handler's thread; its client gets a timeout error, its slot is
        given back and its connection closed, so the service goes on serving.
        """
        if not (0.0 < self.deadline <= now):
            return
        timeout = self.server.settings.request_timeout
        with self.send_lock:
            if self.abandoned or self.deadline == 0.0 or self.request is None:
                return
            self.abandoned = True
            request = self.request
            with contextlib.suppress(OSError):
                if not self.closed:
                    self._write(
                        self.session.seal_frame(
                            encode_error(
                                request.id,
                                "timeout",
                                "RequestTimeout",
                                f"handler for {request.cmd!r} ran past request_timeout "
                                f"({timeout} s)",
                            )
                        )
                    )
        log.error(
            "handler ran past request_timeout; abandoning it and closing the connection",
            service=self.server.settings.name, cmd=clip(request.cmd), peer=self.peer,
            request_timeout=timeout, request_id=request.request_id,
        )
        self.server.limiter.release()
        self.close()

    def _send(self, plaintext: bytes) -> None:
        with self.send_lock:
            if self.closed:
                return
            self._write(self.session.seal_frame(plaintext))

    def abort(self) -> None:
        """Close the connection now (idempotent); a blocked receive returns at once."""
        with self.send_lock:
            if self.closed:
                return
            self.closed = True
        if self.loop is not None:
            self.loop.remove(self)  # before close: the descriptor may be reused at once
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _split_result(result: Any) -> tuple[list[Any], dict[str, Any]]:
    """Check the ``(res_args, res_kwargs)`` shape a handler must return."""
    if not isinstance(result, Sequence) or isinstance(result, str | bytes) or len(result) != 2:
        raise TypeError(
            f"handle_request must return (res_args, res_kwargs), got {type(result).__name__}"
        )
    res_args, res_kwargs = result
    if not isinstance(res_args, list | tuple) or not isinstance(res_kwargs, Mapping):
        raise TypeError("handle_request must return (list, dict)")
    return list(res_args), dict(res_kwargs)
