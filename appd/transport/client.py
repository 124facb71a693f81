"""SecureSocketAppClient: the blocking client of wire protocol v2.

Made for web workers: created at import time, it connects lazily on the first request; after a
fork the child opens its own connection and never touches its parent's; threads share one client
safely (one request at a time per client); it reconnects transparently when the connection broke
before a request was sent, and raises :class:`~appd.errors.ConnectionLost` rather than silently
re-sending a request whose reply was lost.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Protocol

from appd.errors import (
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    DeadlineExceeded,
    ProtocolError,
    RequestTimeout,
    ServiceBusy,
    TransportError,
    remote_error,
)
from appd.scope import current_scope, new_request_id
from appd.transport.crypto import key_bytes
from appd.transport.listen import format_address
from appd.transport.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    ClientHandshake,
    FrameDecoder,
    Reply,
    Session,
    encode_request,
    ok_results,
    reply_of,
    unpack,
)
from appd.transport.sockopts import set_kernel_timeouts, set_nodelay

__all__ = ["ClientBase", "SecureSocketAppClient", "single_result"]

RECV_SIZE = 64 * 1024

#: Connections tried per request when the service closes them during the handshake.  Such a
#: request was never sent, so it provably did not run: a process that was told to stop hands its
#: unfinished handshakes back this way, and a fresh connection reaches a process still serving.
HANDSHAKE_ATTEMPTS = 3


def closed_during_handshake(exc: BaseException) -> bool:
    """True for a handshake the service cut short (end of file, reset): worth a fresh try."""
    return isinstance(exc, EOFError | ConnectionError)


class _Closable(Protocol):
    def close(self) -> None: ...


class ClientBase:
    """What the blocking and the asyncio clients share: settings, checks and reply mapping."""

    def __init__(
        self,
        host: str | None,
        port: int | None,
        username: str,
        password: str,
        key: str | bytes,
        *,
        path: str | None = None,
        timeout: float = 30,
        connect_timeout: float = 5,
    ) -> None:
        if not path and (not host or port is None):
            raise ConfigurationError("a client needs host and port, or path")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ConfigurationError("a client's username and password must be strings")
        self.host = host
        self.port = port
        self.path = path
        self.username = username
        self._password = password
        self._psk = key_bytes(key, owner="client")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._ids = itertools.count(1)
        self._pid = os.getpid()
        self._init_connection_state()

    def _init_connection_state(self) -> None:
        """Set up the I/O-specific state (called by the constructor)."""

    #: The open connection, if any (each client kind stores its own kind of connection).
    _conn: _Closable | None

    def _drop(self) -> None:
        """Close and forget the connection; the next request opens a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reusable(self, reply: Reply) -> Reply | None:
        """``reply``; or None when the service said goodbye before it read the request, which
        therefore never ran and may be sent again.  Drops a connection that cannot be reused."""
        if reply.bye is not None:
            self._drop()
            return None
        if not reply.ok and reply.error_code == "timeout":
            self._drop()
        return reply

    @property
    def address(self) -> str:
        """The service's address as messages show it."""
        return format_address(self.host, self.port, self.path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} user={self.username!r}>"

    def _new_handshake(self) -> ClientHandshake:
        return ClientHandshake(self._psk, self.username, self._password)

    @staticmethod
    def _check_command(reqcmd: object) -> None:
        if not isinstance(reqcmd, str):
            raise TypeError(f"the command must be a str, not {type(reqcmd).__name__}")

    def _body(
        self,
        call_id: int,
        reqcmd: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        left: float,
        rid: str,
    ) -> bytes:
        """The request body of a call sent now with ``left`` seconds to its deadline (the
        earlier of ``timeout`` from now, connecting not counted, and the enclosing
        ``appd.deadline`` scope's).  It carries the time left, less a margin for the reply's
        way back (so that a service's ``DeadlineExceeded`` reaches the caller before its own
        timeout fires), and the request id (the scope's, else a fresh one)."""
        if left <= 0.0:
            raise self._expired_unsent(reqcmd)
        within = left - min(REPLY_MARGIN, left * REPLY_MARGIN_SHARE)
        try:
            return encode_request(call_id, reqcmd, args, kwargs, within, rid)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"the arguments of {reqcmd!r} cannot be serialized: {exc}"
            ) from None

    def _other_reply(self, msg: Any, call_id: int, reqcmd: str) -> tuple[
        list[Any], dict[str, Any]
    ] | None:
        """What a decoded reply to call ``call_id`` says when it is not a plain success (see
        :func:`~appd.transport.protocol.ok_results`): the error it reports, raised, or None
        when the service said goodbye before it read the request, which therefore never ran
        and may be sent again.  A malformed reply drops the connection."""
        try:
            reply = reply_of(msg)
        except ProtocolError:
            self._drop()
            raise
        reusable = self._reusable(reply)
        return None if reusable is None else self._result(reusable, call_id, reqcmd)

    def _expired_unsent(self, reqcmd: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the deadline of {reqcmd!r} to {self.address} passed before it was sent; "
            "it was not executed",
            address=self.address,
        )

    def _not_sent(self, reqcmd: str) -> ConnectionLost:
        return ConnectionLost(
            f"connection to {self.address} broke; request {reqcmd!r} was not sent"
        )

    def _lost(self, reqcmd: str) -> ConnectionLost:
        return ConnectionLost(
            f"connection to {self.address} lost while {reqcmd!r} was pending; "
            "it may or may not have run"
        )

    def _no_reply(
        self, exc: BaseException, reqcmd: str, budget: float, scoped: bool
    ) -> TransportError:
        """The connection dropped, and the error to raise for a request whose reply did not
        come (``exc``): none within ``budget`` seconds, or the connection was lost.  Either
        way the request may have run."""
        self._drop()
        if isinstance(exc, TimeoutError):
            return self._timed_out(reqcmd, budget, scoped)
        return self._lost(reqcmd)

    def _timed_out(self, reqcmd: str, budget: float, scoped: bool) -> RequestTimeout:
        """No reply within ``budget`` seconds (the scope's deadline when ``scoped``)."""
        within = f"its deadline ({budget:.3g} s)" if scoped else f"{self.timeout:g} s"
        return RequestTimeout(
            f"no reply to {reqcmd!r} from {self.address} within {within}; it may have run",
            not_executed=False,
        )

    def _connect_failed(self, exc: OSError) -> ConnectFailed:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror
        return ConnectFailed(
            f"cannot connect to {self.address}: {reason or type(exc).__name__}"
        )

    def _handshake_failed(self, exc: BaseException) -> ConnectFailed:
        what = "timed out" if isinstance(exc, TimeoutError) else "connection closed"
        return ConnectFailed(f"handshake with {self.address} failed: {what}")

    def _kept_closing(self) -> ConnectionLost:
        return ConnectionLost(f"{self.address} kept closing the connection; request not sent")

    def _result(self, reply: Reply, request_id: int, reqcmd: str) -> tuple[list[Any], dict[
        str, Any
    ]]:
        if reply.id is None and reply.error_code == "bad_request":
            self._drop()  # the service closes it too
            raise ProtocolError(f"{self.address} refused the request: {reply.error_message}")
        if reply.id != request_id:
            # The replies on this connection can no longer be matched to their requests: the
            # next call goes on a new one.
            self._drop()
            raise ProtocolError(
                f"{self.address} answered request {reply.id} while {request_id} was pending"
            )
        if reply.ok:
            return reply.args, reply.kwargs
        if reply.error_code == "busy":
            raise ServiceBusy(f"{self.address}: {reply.error_message}")
        if reply.error_code == "deadline":
            raise DeadlineExceeded(f"{self.address}: {reply.error_message}", address=self.address)
        if reply.error_code == "timeout":
            raise RequestTimeout(f"{self.address}: {reply.error_message}; it may have run")
        raise remote_error(
            reply.error_type,
            reply.error_message,
            context=f"request {reqcmd!r} to {self.address}",
        )


def call_deadline(now: float, timeout: float, scope_at: float | None) -> tuple[float, bool]:
    """When a call sent at ``now`` stops waiting for its reply: ``timeout`` from now
    (connecting does not count against it), or the enclosing scope's deadline ``scope_at`` if
    that is earlier; and whether the scope's deadline is the one that holds."""
    at = now + timeout
    if scope_at is not None and scope_at < at:
        return scope_at, True
    return at, False


def _wait_for(at: float | None) -> float:
    """Seconds until ``at`` (-1: wait without limit, as ``Lock.acquire`` takes it; a deadline
    further away than ``Lock.acquire`` can wait is none)."""
    if at is None:
        return -1.0
    left = at - time.monotonic()
    return -1.0 if left >= threading.TIMEOUT_MAX else max(0.0, left)


#: Objects a reply may decode to: a client trusts its service's replies up to this many.
REPLY_OBJECTS = DEFAULT_MAX_FRAME_SIZE

#: At most this many seconds of a call's time left are kept back for the reply's way back.
REPLY_MARGIN = 0.05
#: ... and at most this share of it.
REPLY_MARGIN_SHARE = 0.1


def single_result(reqcmd: str, res_args: list[Any], res_kwargs: dict[str, Any]) -> Any:
    """What ``call`` returns: the one result, or None when there is none."""
    if not res_kwargs and len(res_args) <= 1:
        return res_args[0] if res_args else None
    raise ValueError(
        f"{reqcmd!r} returned {len(res_args)} results and {len(res_kwargs)} named results; "
        "use send_request() to get them all"
    )


class _Connection:
    """One authenticated, blocking connection."""

    def __init__(self, sock: socket.socket, session: Session, max_frame_size: int) -> None:
        self.sock = sock
        self.session = session
        self.decoder = FrameDecoder(max_frame_size)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        #: ``poll(0)`` true: the service already closed (or said goodbye on) this idle
        #: connection, since anything readable before a request was sent is a goodbye frame
        #: or end of file.  (The poller's own method: one Python call less per request.)
        self.poll = self.poller.poll

    def read_frame(self, deadline: float, poll: bool = False) -> bytes:
        """The next frame body; TimeoutError past ``deadline``, EOFError if the peer closed.
        ``poll``: the deadline comes before the socket's receive timeout would fire, so wait
        for data with ``poll`` up to it first."""
        decoder = self.decoder
        body = decoder.next_frame() if decoder.buffer else None
        while body is None:
            left = deadline - time.monotonic()
            if left <= 0.0:
                raise TimeoutError
            if poll and not self.poller.poll(left * 1000.0 + 1.0):
                raise TimeoutError
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:  # SO_RCVTIMEO expired
                raise TimeoutError from None
            if not data:
                raise EOFError
            body = decoder.push(data)
        return body

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


#: Pause between two connection attempts while a Unix socket's accept queue is full.
UNIX_RETRY_INTERVAL = 0.002


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect to a Unix socket within ``timeout`` seconds.  A full accept queue makes a Unix
    ``connect`` fail at once (EAGAIN) instead of waiting as TCP does; so it is tried again until
    the deadline, which keeps clients getting through while the service drains a burst."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() + UNIX_RETRY_INTERVAL >= deadline:
                raise TimeoutError from None
            time.sleep(UNIX_RETRY_INTERVAL)
        except BaseException:
            sock.close()
            raise


def _open_socket(client: ClientBase, timeout: float | None = None) -> socket.socket:
    timeout = client.connect_timeout if timeout is None else timeout
    try:
        if client.path:
            sock = _connect_unix(client.path, timeout)
        else:
            assert client.host is not None and client.port is not None
            sock = socket.create_connection((client.host, client.port), timeout=timeout)
            set_nodelay(sock)
    except OSError as exc:
        raise client._connect_failed(exc) from None
    return sock


_clients: weakref.WeakSet[SecureSocketAppClient] = weakref.WeakSet()


def _reset_clients_after_fork() -> None:
    for client in list(_clients):
        client._forget_parent_connection()


os.register_at_fork(after_in_child=_reset_clients_after_fork)


class SecureSocketAppClient(ClientBase):
    """Calls a :class:`~appd.SecureSocketAppService`; see the module docstring for the
    guarantees.  ``timeout`` bounds each request, ``connect_timeout`` connect and handshake."""

    def _init_connection_state(self) -> None:
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        _clients.add(self)

    def _forget_parent_connection(self) -> None:
        # In a forked child: drop (never use, never shut down) the parent's connection.
        self._lock = threading.Lock()
        if self._conn is not None:
            self._conn.close()  # closes only the child's copy of the descriptor
            self._conn = None
        self._pid = os.getpid()

    def _connect(self, reqcmd: str = "", scope_at: float | None = None) -> _Connection:
        """A new authenticated connection (for call ``reqcmd``); one the service closes during
        the handshake is tried again on a fresh connection (the request was not sent yet),
        within ``connect_timeout`` (and before the scope's deadline ``scope_at``: past it, the
        call is :class:`~appd.errors.DeadlineExceeded`, not sent)."""
        deadline = time.monotonic() + self.connect_timeout
        if scope_at is not None and scope_at < deadline:
            try:
                return self._connect_within(scope_at)
            except ConnectFailed:
                if time.monotonic() >= scope_at:
                    raise self._expired_unsent(reqcmd) from None
                raise
        return self._connect_within(deadline)

    def _connect_within(self, deadline: float) -> _Connection:
        for attempt in range(1, HANDSHAKE_ATTEMPTS + 1):
            try:
                return self._connect_once(deadline)
            except _HandshakeCut as cut:
                if attempt == HANDSHAKE_ATTEMPTS or time.monotonic() >= deadline:
                    raise self._handshake_failed(cut.error) from None
        raise AssertionError("unreachable")

    def _connect_once(self, deadline: float) -> _Connection:
        # A service that is down refuses the connection at once, before anything is derived.
        sock = _open_socket(self, max(0.001, deadline - time.monotonic()))
        try:
            # A process's first connection derives the keys (one scrypt derivation per key,
            # however many threads connect at once), before its hello starts the handshake.
            handshake = self._new_handshake()
        except BaseException:
            sock.close()
            raise
        conn = _Connection(sock, _pending_session(), self.max_frame_size)
        try:
            sock.sendall(handshake.hello())
            sock.sendall(handshake.on_server_hello(conn.read_frame(deadline)))
            conn.session = handshake.on_auth_result(conn.read_frame(deadline))
            set_kernel_timeouts(sock, self.timeout, self.timeout)
        except (TimeoutError, EOFError, OSError) as exc:
            conn.close()
            if closed_during_handshake(exc):
                raise _HandshakeCut(exc) from None
            raise self._handshake_failed(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def send_request(self, reqcmd: str, *args: Any, **kwargs: Any) -> tuple[
        list[Any], dict[str, Any]
    ]:
        """Send a request and wait for ``(res_args, res_kwargs)``.

        Raises :class:`~appd.errors.RemoteError` when the handler raised, and the other
        :class:`~appd.errors.TransportError` subclasses when the call itself failed.
        """
        return self._request(reqcmd, args, kwargs)

    def call(self, reqcmd: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`send_request`, returning the single result (None when there is none)."""
        # Straight to the request (a Python call and a repacking of the arguments less) when
        # send_request is this class's own; a subclass's override (or a patch of the class's
        # method) is called as it always was.
        if type(self).send_request is _SEND_REQUEST:
            res_args, res_kwargs = self._request(reqcmd, args, kwargs)
        else:
            res_args, res_kwargs = self.send_request(reqcmd, *args, **kwargs)
        return single_result(reqcmd, res_args, res_kwargs)

    def _request(self, reqcmd: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[
        list[Any], dict[str, Any]
    ]:
        """One call, from the lock to the results.  Written as one function on purpose: it is
        every request's path, and each Python call or object it saves is CPU saved on both
        sides of the round trip (docs/performance.md)."""
        if type(reqcmd) is not str:
            self._check_command(reqcmd)
        scope_at, rid = current_scope()
        if self._pid != os.getpid():
            self._forget_parent_connection()
        lock = self._lock
        # Another thread's call in progress: wait for it, up to this call's scope deadline.
        if not lock.acquire(False) and not lock.acquire(True, _wait_for(scope_at)):
            raise self._expired_unsent(reqcmd)
        try:
            call_id = next(self._ids)
            if not rid:
                rid = new_request_id()
            for attempt in range(2):
                conn = self._conn
                if conn is None or conn.poll(0):  # readable while idle: goodbye, or closed
                    self._drop()
                    conn = self._conn = self._connect(reqcmd, scope_at)
                now = time.monotonic()
                at, scoped = call_deadline(now, self.timeout, scope_at)
                session = conn.session
                frame = session.seal_frame(self._body(call_id, reqcmd, args, kwargs, at - now, rid))
                try:
                    conn.sock.sendall(frame)
                except OSError:
                    self._drop()  # an incomplete frame is never processed: safe to try again
                    if attempt:
                        raise self._not_sent(reqcmd) from None
                    continue
                try:
                    msg = unpack(session.open(conn.read_frame(at, scoped)), REPLY_OBJECTS)
                except (EOFError, OSError) as exc:  # TimeoutError included
                    raise self._no_reply(exc, reqcmd, at - now, scoped) from None
                except ProtocolError:
                    self._drop()
                    raise
                results = ok_results(msg, call_id) or self._other_reply(msg, call_id, reqcmd)
                if results is not None:
                    return results
        finally:
            lock.release()
        raise self._kept_closing()

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> SecureSocketAppClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_SEND_REQUEST = SecureSocketAppClient.send_request


class _HandshakeCut(Exception):
    """The service closed the connection during the handshake (see ``HANDSHAKE_ATTEMPTS``)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _pending_session() -> Session:
    """A placeholder replaced as soon as the handshake completes."""
    return Session.__new__(Session)
