"""The socket server of wire protocol v1.

Design (measured; see docs/performance.md): one thread runs a selector over the listening socket
and every connection still in its handshake, so a thousand silent or slow connections cost file
descriptors, not threads.  Once authenticated, a request is served by the thread that read it,
which runs the handler *itself* and writes the reply: the common path never hands a request from
one thread to another.  With ``concurrency = 1`` one thread serves every authenticated connection
(:mod:`appd.transport.serving_loop`); otherwise each has a thread of its own.  A
:class:`~appd.transport.limits.Limiter` bounds how many handlers run at once (``concurrency``)
and how many wait; a single watchdog thread enforces ``request_timeout`` (and hands the serving
loop on when one request holds it).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from appd.errors import ProtocolError, RequestTimeout, ServiceBusy
from appd.logging import get_logger
from appd.transport.limits import Limiter, Watchdog
from appd.transport.protocol import (
    BadRequest,
    FrameDecoder,
    ServerHandshake,
    Session,
    decode_request,
    encode_bye,
    encode_error,
    encode_reply,
)
from appd.transport.request import LocalCounter, Request, RequestCounter, RequestHandler
from appd.transport.serving_loop import ServingLoop
from appd.transport.sockopts import set_kernel_timeouts, set_nodelay

__all__ = ["AcceptGate", "SecureSocketServer", "ServerSettings", "peer_name"]

log = get_logger("appd.transport")

#: How often the accept loop looks at the quit flag and the handshake deadlines.
ACCEPT_TICK = 0.05
#: How often an idle connection thread wakes to check for shutdown and the idle timeout.
CONNECTION_TICK = 0.25
#: Bytes asked of the kernel per receive.
RECV_SIZE = 64 * 1024


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


def peer_name(address: Any) -> str:
    """``host:port`` for a TCP peer, ``unix`` for a Unix-socket peer."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "unix"


class _Pending:
    """A connection still in its handshake (owned by the accept loop)."""

    __slots__ = ("deadline", "decoder", "handshake", "hello_done", "peer", "sock")

    def __init__(
        self, sock: socket.socket, peer: str, handshake: ServerHandshake, deadline: float,
        max_frame_size: int,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.handshake = handshake
        self.deadline = deadline
        self.hello_done = False
        # A hello or an auth frame is small; anything claiming more is not a client.
        self.decoder = FrameDecoder(min(max_frame_size, 64 * 1024))


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
    ) -> None:
        """:param handler: called with each request; its reply (or exception) is sent back.
        :param counter: counts each answered request (default: a :class:`LocalCounter`).
        :param gate: set in a supervised process (see :class:`AcceptGate`)."""
        self.settings = settings
        self.handler = handler
        self.counter: RequestCounter = LocalCounter() if counter is None else counter
        self.listener = listener
        self.gate = gate
        self._listening = False
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
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

    # -- accept loop -------------------------------------------------------------------------

    def serve(self, should_stop: Callable[[], bool]) -> None:
        """Accept, handshake and dispatch until ``should_stop()``; then finish in-flight
        requests within ``shutdown_grace`` seconds and return."""
        if self.watchdog is not None:
            self.watchdog.start()
        self.listener.setblocking(False)
        selector = selectors.DefaultSelector()
        gate = self.gate
        try:
            while not should_stop():
                if gate is not None:
                    gate.beat()
                self._listen(selector, gate is None or gate.may_accept(self._open_count()))
                for key, _ in selector.select(ACCEPT_TICK):
                    if key.data is None:
                        self._accept_all(selector)
                    else:
                        self._advance(selector, key.data)
                self._expire_handshakes(selector)
        finally:
            self._listen(selector, False)
            if gate is not None:
                # Shared with other processes: release it now, not after the drain.
                self.listener.close()
            # Unfinished handshakes are closed: their clients never sent a request, so they
            # connect again, to a process still serving.
            for pending in list(self._pending.values()):
                self._drop(selector, pending)
            selector.close()
            self._drain()

    def _open_count(self) -> int:
        return len(self._pending) + len(self._connections)

    def _listen(self, selector: selectors.BaseSelector, on: bool) -> None:
        """Watch the listener for new connections, or stop watching it."""
        if on and not self._listening:
            selector.register(self.listener, selectors.EVENT_READ, None)
        elif not on and self._listening:
            selector.unregister(self.listener)
        self._listening = on

    def _accept_all(self, selector: selectors.BaseSelector) -> None:
        gate = self.gate
        while True:
            if gate is not None and not gate.may_accept(self._open_count()):
                self._listen(selector, False)  # above its share: leave the rest to siblings
                return
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving those we have
                if exc.errno == errno.EINVAL:
                    # The listener was shut down (its service is stopping): nothing to accept.
                    self._listen(selector, False)
                    return
                log.warning("accept failed", service=self.settings.name, error=str(exc))
                return
            sock.setblocking(False)
            set_nodelay(sock)
            pending = _Pending(
                sock,
                peer_name(address),
                ServerHandshake(self.settings.psk, self.settings.users),
                time.monotonic() + self.settings.handshake_timeout,
                self.settings.max_frame_size,
            )
            if len(self._pending) >= self.settings.max_connections:
                # Shed the oldest unfinished handshake, so a flood of silent connections
                # cannot lock out a client that completes its handshake promptly.
                _, oldest = self._pending.popitem(last=False)
                self._drop(selector, oldest, "handshake backlog full")
            self._pending[sock.fileno()] = pending
            selector.register(sock, selectors.EVENT_READ, pending)

    def _drop(
        self, selector: selectors.BaseSelector, pending: _Pending, reason: str | None = None
    ) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(pending.sock)
        if reason is not None:
            log.info(
                "connection closed during handshake",
                service=self.settings.name, peer=pending.peer, reason=reason,
            )
        pending.sock.close()

    def _expire_handshakes(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._pending:
            pending = next(iter(self._pending.values()))
            if pending.deadline > now:
                return
            self._drop(selector, pending, "handshake timeout")

    def _advance(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(selector, pending, f"receive failed: {exc.strerror}")
            return
        if not data:
            self._drop(selector, pending, "client closed")
            return
        pending.decoder.feed(data)
        try:
            while (body := pending.decoder.next_frame()) is not None:
                if not pending.hello_done:
                    if not self._hello(selector, pending, body):
                        return
                else:
                    self._authenticate(selector, pending, body)
                    return
        except ProtocolError as exc:
            self._drop(selector, pending, str(exc))

    def _hello(self, selector: selectors.BaseSelector, pending: _Pending, body: bytes) -> bool:
        reply = pending.handshake.on_client_hello(body)
        with self._conn_lock:
            busy = len(self._connections) >= self.settings.max_connections
        if busy or self.stopping.is_set():
            _send_small(pending.sock, ServerHandshake.busy_hello())
            self._drop(selector, pending, "max_connections reached")
            return False
        if not _send_small(pending.sock, reply):
            self._drop(selector, pending, "client not reading")
            return False
        pending.hello_done = True
        return True

    def _authenticate(
        self, selector: selectors.BaseSelector, pending: _Pending, body: bytes
    ) -> None:
        outcome = pending.handshake.on_auth(body)
        sent = _send_small(pending.sock, outcome.reply)
        if outcome.session is None or outcome.username is None or not sent:
            log.warning(
                "authentication failed", service=self.settings.name, peer=pending.peer
            )
            self._drop(selector, pending)
            return
        self._pending.pop(pending.sock.fileno(), None)
        selector.unregister(pending.sock)
        conn = _Connection(
            self, pending.sock, pending.peer, outcome.username, outcome.session,
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


def _send_small(sock: socket.socket, frame: bytes) -> bool:
    """Send a handshake frame on a non-blocking socket; False if it did not all fit."""
    try:
        return sock.send(frame) == len(frame)
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
        #: When the last request was served (the serving loop's idle check reads it).
        self.last_activity = time.monotonic()

    def start(self) -> None:
        """Switch the socket to blocking with a receive tick, and start serving: from the
        server's loop, or from a thread of the connection's own."""
        # The receive wakes every tick to notice shutdown and the idle timeout.
        set_kernel_timeouts(
            self.sock, CONNECTION_TICK, self.server.settings.request_timeout or 60.0
        )
        if self.loop is not None:
            self.loop.add(self)
        else:
            threading.Thread(target=self._run, name=f"appd-conn-{self.peer}", daemon=True).start()

    def on_readable(self) -> None:
        """Serving loop: read what arrived, serve each whole request in it; close the
        connection on end of file or a protocol violation."""
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            if not data:
                self.close()
                return
            body = self.decoder.push(data)
            while body is not None and not self.closed:
                self._serve_frame(body)
                body = self.decoder.next_frame()
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
        self.last_activity = time.monotonic()

    def sweep(self, now: float) -> None:
        """Serving loop: say goodbye to a connection idle past ``idle_timeout``, or to every
        idle one when the server is stopping."""
        idle_timeout = self.server.settings.idle_timeout
        if self.server.stopping.is_set():
            reason = "shutdown"
        elif idle_timeout and now - self.last_activity >= idle_timeout:
            reason = "idle"
        else:
            return
        if not self.decoder.pending():
            with contextlib.suppress(OSError):
                self._send(encode_bye(reason))
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
        settings = self.server.settings
        decoder, recv, stopping = self.decoder, self.sock.recv, self.server.stopping
        serve, monotonic = self._serve_frame, time.monotonic
        try:
            last_activity = monotonic()
            while not self.closed:
                body = decoder.next_frame()
                if body is None:
                    if stopping.is_set() and not decoder.pending():
                        self._send(encode_bye("shutdown"))
                        return
                    try:
                        data = recv(RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        idle = monotonic() - last_activity
                        if settings.idle_timeout and idle >= settings.idle_timeout:
                            if not decoder.pending():
                                self._send(encode_bye("idle"))
                            return
                        continue
                    if not data:
                        return
                    body = decoder.push(data)
                    if body is None:
                        continue
                serve(body)
                last_activity = monotonic()
        except (ProtocolError, OSError) as exc:
            self._log_end(exc)
        finally:
            self.close()

    def _serve_frame(self, body: bytes) -> None:
        plaintext = self.open(body)  # raises before anything runs if it fails
        try:
            request_id, cmd, args, kwargs = decode_request(plaintext)
        except BadRequest as exc:
            if exc.request_id is None:
                raise
            self._send(encode_error(exc.request_id, "bad_request", "ProtocolError", str(exc)))
            return
        request = Request(request_id, cmd, args, kwargs, self.username, self.peer)
        limiter = self.limiter
        try:
            limiter.acquire()
        except ServiceBusy as exc:
            self._send(encode_error(request_id, "busy", "ServiceBusy", str(exc)))
            return
        if self.timeout:
            self.request = request
            self.deadline = time.monotonic() + self.timeout
        reply = b""
        try:
            reply = self._run_handler(request)
        finally:
            with self.send_lock:
                owned = not self.abandoned
                self.deadline = 0.0
                if owned:
                    limiter.release()
                    if reply and not self.closed:  # no reply was built: the connection closes
                        self.sock.sendall(self.seal_frame(reply))

    def _run_handler(self, request: Request) -> bytes:
        try:
            result = self.handler(request)
        except RequestTimeout as exc:
            return encode_error(request.id, "timeout", "RequestTimeout", str(exc))
        except BaseException as exc:
            # SystemExit and the like too: out of a handler they are its failure, not the
            # server's, and would otherwise end the thread serving every connection.  (Handlers
            # never run on the main thread, so KeyboardInterrupt does not arrive here.)
            log.warning(
                "handler raised", service=self.server.settings.name, cmd=request.cmd,
                peer=self.peer, error_type=type(exc).__name__, exc_info=True,
            )
            return encode_error(request.id, "handler", type(exc).__name__, str(exc))
        try:
            if type(result) is tuple and len(result) == 2:  # the common case, checked cheaply
                res_args, res_kwargs = result
                if type(res_args) is list and type(res_kwargs) is dict:
                    return encode_reply(request.id, res_args, res_kwargs)
            res_args, res_kwargs = _split_result(result)
            return encode_reply(request.id, res_args, res_kwargs)
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning(
                "handler result cannot be sent", service=self.server.settings.name,
                cmd=request.cmd, error=str(exc),
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
                    self.sock.sendall(
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
            service=self.server.settings.name, cmd=request.cmd, peer=self.peer,
            request_timeout=timeout,
        )
        self.server.limiter.release()
        self.close()

    def _send(self, plaintext: bytes) -> None:
        with self.send_lock:
            if self.closed:
                return
            self.sock.sendall(self.session.seal_frame(plaintext))

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
