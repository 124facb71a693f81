"""A reply that answers another request than the one pending: the client raises
:class:`ProtocolError` and drops the connection, so the next call is not read against a stream
of replies it can no longer match (a real socket, a real handshake, a service that answers
every request with a wrong id)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from appd import AsyncSecureSocketAppClient, SecureSocketAppClient
from appd.errors import ProtocolError
from appd.transport.protocol import (
    FrameDecoder,
    ServerCredentials,
    ServerHandshake,
    decode_scoped_request,
    encode_reply,
)

KEY = "a key for the wrong-id service!!"
USER, PASSWORD = "web", "a password"


class WrongIdService:
    """Accepts connections, completes the handshake, and answers each request with its id
    plus 1000; counts the connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.credentials = ServerCredentials(KEY.encode(), {USER: PASSWORD})
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        decoder = FrameDecoder()

        def frame() -> bytes | None:
            while (body := decoder.next_frame()) is None:
                data = sock.recv(65536)
                if not data:
                    return None
                decoder.feed(data)
            return body

        with sock:
            handshake = ServerHandshake(self.credentials)
            hello = frame()
            assert hello is not None
            sock.sendall(handshake.on_client_hello(hello))
            auth = frame()
            assert auth is not None
            outcome = handshake.on_auth(auth)
            sock.sendall(outcome.reply)
            session = outcome.session
            assert session is not None
            while (body := frame()) is not None:
                request_id, _, args, _, _, _ = decode_scoped_request(session.open(body))
                sock.sendall(session.seal_frame(encode_reply(request_id + 1000, args, {})))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def wrong_ids() -> Iterator[WrongIdService]:
    service = WrongIdService()
    try:
        yield service
    finally:
        service.close()


def test_the_blocking_client_drops_a_connection_that_answered_another_request(
    wrong_ids: WrongIdService,
) -> None:
    with SecureSocketAppClient("127.0.0.1", wrong_ids.port, USER, PASSWORD, KEY) as client:
        for calls in (1, 2):
            with pytest.raises(ProtocolError, match="answered request"):
                client.call("echo", calls)
            assert wrong_ids.connections == calls  # each call on a connection of its own


def test_the_asyncio_client_drops_a_connection_that_answered_another_request(
    wrong_ids: WrongIdService,
) -> None:
    async def main() -> None:
        client = AsyncSecureSocketAppClient("127.0.0.1", wrong_ids.port, USER, PASSWORD, KEY)
        try:
            for calls in (1, 2):
                with pytest.raises(ProtocolError, match="answered request"):
                    await client.call("echo", calls)
                assert wrong_ids.connections == calls
        finally:
            await client.close()

    asyncio.run(main())
