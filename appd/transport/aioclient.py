"""AsyncSecureSocketAppClient: the asyncio client, with the blocking client's API and guarantees.

It shares the sans-IO protocol and the reply handling with
:class:`~appd.transport.client.SecureSocketAppClient`; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from types import TracebackType
from typing import Any

from appd.errors import ConnectFailed, ProtocolError
from appd.scope import current_scope, new_request_id
from appd.transport.client import (
    HANDSHAKE_ATTEMPTS,
    RECV_SIZE,
    REPLY_OBJECTS,
    ClientBase,
    call_deadline,
    closed_during_handshake,
    single_result,
)
from appd.transport.protocol import FrameDecoder, Session, ok_results, unpack

__all__ = ["AsyncSecureSocketAppClient"]


def _loop_time(at: float) -> float:
    """A :func:`time.monotonic` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (at - time.monotonic())


class _AsyncConnection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame_size: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_frame_size)
        self.session: Session | None = None

    async def read_frame(self) -> bytes:
        while (body := self.decoder.next_frame()) is None:
            data = await self.reader.read(RECV_SIZE)
            if not data:
                raise EOFError
            self.decoder.feed(data)
        return body

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class AsyncSecureSocketAppClient(ClientBase):
    """Calls a service from asyncio code: ``await client.send_request(...)``.

    Same constructor as :class:`~appd.SecureSocketAppClient`.  Connects lazily; one request at a
    time per client (concurrent calls queue on a lock); a forked child never uses its parent's
    connection.
    """

    def _init_connection_state(self) -> None:
        self._conn: _AsyncConnection | None = None
        self._lock: asyncio.Lock | None = None

    async def _connect(self) -> _AsyncConnection:
        """A new authenticated connection; one the service closes during the handshake is
        tried again on a fresh connection (the request was not sent yet)."""
        deadline = time.monotonic() + self.connect_timeout
        for attempt in range(1, HANDSHAKE_ATTEMPTS + 1):
            try:
                return await self._connect_once()
            except (EOFError, ConnectionError) as exc:
                if attempt == HANDSHAKE_ATTEMPTS or time.monotonic() >= deadline:
                    raise self._handshake_failed(exc) from None
        raise AssertionError("unreachable")

    async def _connect_once(self) -> _AsyncConnection:
        # The first handshake of a process derives the scrypt-stretched keys (tens of ms): off
        # the event loop, and before the connection opens (a call cancelled meanwhile, by
        # its deadline or its caller, then leaves no socket behind).  Later ones find them
        # cached.
        handshake = await asyncio.get_running_loop().run_in_executor(None, self._new_handshake)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    reader, writer = await asyncio.open_unix_connection(self.path)
                else:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise self._connect_failed(exc) from None
        conn = _AsyncConnection(reader, writer, self.max_frame_size)
        try:
            async with asyncio.timeout(self.connect_timeout):
                writer.write(handshake.hello())
                writer.write(handshake.on_server_hello(await conn.read_frame()))
                conn.session = handshake.on_auth_result(await conn.read_frame())
        except (TimeoutError, EOFError, OSError) as exc:
            conn.close()
            if closed_during_handshake(exc):
                raise
            raise self._handshake_failed(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def send_request(self, reqcmd: str, *args: Any, **kwargs: Any) -> tuple[
        list[Any], dict[str, Any]
    ]:
        """Send a request and wait for ``(res_args, res_kwargs)`` (errors as the blocking
        client raises them)."""
        if type(reqcmd) is not str:
            self._check_command(reqcmd)
        scope_at, rid = current_scope()
        if self._pid != os.getpid():
            self._conn, self._lock, self._pid = None, None, os.getpid()
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock
        if scope_at is None:
            await lock.acquire()
        else:
            try:  # another task's call may be in progress: wait, up to the scope's deadline
                async with asyncio.timeout_at(_loop_time(scope_at)):
                    await lock.acquire()
            except TimeoutError:
                raise self._expired_unsent(reqcmd) from None
        try:
            call_id = next(self._ids)
            rid = rid or new_request_id()
            for attempt in range(2):
                results = await self._exchange(
                    call_id, reqcmd, args, kwargs, scope_at, rid, last=attempt == 1
                )
                if results is not None:
                    return results
        finally:
            lock.release()
        raise self._kept_closing()

    async def _exchange(
        self,
        call_id: int,
        reqcmd: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scope_at: float | None,
        rid: str,
        last: bool,
    ) -> tuple[list[Any], dict[str, Any]] | None:
        """One attempt; None when the request provably did not reach a handler (retry)."""
        conn = self._conn
        if conn is not None and conn.reader.at_eof():
            self._drop()
            conn = None
        if conn is None:
            if scope_at is not None and scope_at < time.monotonic() + self.connect_timeout:
                try:
                    async with asyncio.timeout_at(_loop_time(scope_at)):
                        conn = await self._connect()
                except (TimeoutError, ConnectFailed):
                    if time.monotonic() >= scope_at:
                        raise self._expired_unsent(reqcmd) from None
                    raise
            else:
                conn = await self._connect()
            self._conn = conn
        assert conn.session is not None
        now = time.monotonic()
        at, scoped = call_deadline(now, self.timeout, scope_at)
        try:
            body = self._body(call_id, reqcmd, args, kwargs, at - now, rid)
            conn.writer.write(conn.session.seal_frame(body))
            await conn.writer.drain()
        except OSError:
            self._drop()
            if last:
                raise self._not_sent(reqcmd) from None
            return None
        try:
            async with asyncio.timeout_at(_loop_time(at)):
                msg = unpack(conn.session.open(await conn.read_frame()), REPLY_OBJECTS)
        except (EOFError, OSError) as exc:  # TimeoutError included
            raise self._no_reply(exc, reqcmd, at - now, scoped) from None
        except (ProtocolError, asyncio.CancelledError):
            self._drop()  # a cancelled call leaves a reply in flight: never reuse the stream
            raise
        return ok_results(msg, call_id) or self._other_reply(msg, call_id, reqcmd)

    async def call(self, reqcmd: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`send_request`, returning the single result (None when there is none)."""
        return single_result(reqcmd, *await self.send_request(reqcmd, *args, **kwargs))

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def __aenter__(self) -> AsyncSecureSocketAppClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
