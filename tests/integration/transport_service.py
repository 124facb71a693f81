"""A real service process for the transport tests, and a client that misbehaves on purpose:
the helpers (imported by the tests as ``transport_service``) and the fixtures (made available
to tests/integration and tests/stress by their conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import pid_alive, stop_process, wait_for

from appd import SecureSocketAppClient
from appd.transport.protocol import ClientHandshake, FrameDecoder, Session

HERE = Path(__file__).parent
KEY = "0123456789abcdef-test-key"


@dataclass
class RunningService:
    proc: subprocess.Popen[bytes]
    port: int | None
    path: str | None
    log: Path

    def client(self, user: str = "alice", password: str = "alice-pw", key: str = KEY,
               **kwargs: Any) -> SecureSocketAppClient:
        if self.path:
            return SecureSocketAppClient(None, None, user, password, key, path=self.path,
                                         **kwargs)
        return SecureSocketAppClient("127.0.0.1", self.port, user, password, key, **kwargs)

    def raw_socket(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def assert_serving(self) -> None:
        with self.client() as client:
            assert client.call("echo", "still here") == "still here"


def start_service(tmp_path: Path, settings: dict[str, Any] | None = None) -> RunningService:
    address_file = tmp_path / f"address-{os.urandom(4).hex()}"
    log = tmp_path / "service.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "echo_service.py"), str(address_file),
             json.dumps(settings or {})],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: address_file.exists() or proc.poll() is not None,
                 message="service to bind")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"service exited: {log.read_text()}")
    text = address_file.read_text()
    if text.isdigit():
        return RunningService(proc, int(text), None, log)
    return RunningService(proc, None, text, log)


def stop_service(service: RunningService) -> int | None:
    return stop_process(service.proc)


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., RunningService]]:
    """Start a service process with given settings; stopped (and killed if need be) after."""
    started: list[RunningService] = []

    def make(**settings: Any) -> RunningService:
        service = start_service(tmp_path, settings)
        started.append(service)
        return service

    yield make
    for service in started:
        stop_service(service)
        assert not pid_alive(service.proc.pid)


@pytest.fixture
def service(make_service: Callable[..., RunningService]) -> RunningService:
    """A service process with default settings, but short timeouts."""
    return make_service(handshake_timeout=2.0, request_timeout=2.0)


class RawClient:
    """A client built by hand from the sans-IO core, for tests that misbehave on purpose."""

    def __init__(self, sock: socket.socket, user: str = "alice", password: str = "alice-pw",
                 key: str = KEY) -> None:
        self.sock = sock
        self.sent = bytearray()
        self.decoder = FrameDecoder()
        handshake = ClientHandshake(key.encode(), user, password)
        self.send(handshake.hello())
        self.send(handshake.on_server_hello(self.read_frame()))
        self.session: Session = handshake.on_auth_result(self.read_frame())

    def send(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        while (body := self.decoder.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.decoder.feed(data)
        return body


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the peer closes ``sock`` within ``timeout`` (reads and discards any data)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True
