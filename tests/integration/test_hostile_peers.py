"""Quick regression tests of what a hostile local peer once got away with (the slow ones, with
floods and deadlines, are in tests/stress/test_findings.py)."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from transport_service import (
    KEY,
    RawClient,
    RunningService,
    closed_by_peer,
    start_service,
    stop_service,
)

from appd.errors import ProtocolError
from appd.transport import crypto
from appd.transport.protocol import (
    MAGIC,
    STATUS_UNSUPPORTED_VERSION,
    VERSION,
    ClientHandshake,
    FrameDecoder,
    encode_frame,
    pack,
)


def _unix_service(tmp_path: Path, umask: int, **settings: object) -> RunningService:
    path = tmp_path / "svc.sock"
    old = os.umask(umask)  # inherited by the service process
    try:
        return start_service(tmp_path, {"path": str(path), **settings})
    finally:
        os.umask(old)


@pytest.mark.parametrize(("settings", "mode"), [({}, 0o600), ({"socket_mode": 0o660}, 0o660)])
def test_unix_socket_permissions_ignore_the_umask(
    tmp_path: Path, settings: dict[str, object], mode: int
) -> None:
    service = _unix_service(tmp_path, 0o000, **settings)
    try:
        assert service.path is not None
        assert stat.S_IMODE(os.stat(service.path).st_mode) == mode
        service.assert_serving()
    finally:
        stop_service(service)


def test_a_bad_socket_mode_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="socket_mode"):
        _unix_service(tmp_path, 0o022, socket_mode="rw-rw----")


def test_an_unknown_protocol_version_gets_status_2(service: RunningService) -> None:
    sock = service.raw_socket()
    sock.sendall(encode_frame(MAGIC + bytes([VERSION + 7]) + os.urandom(32)))
    decoder = FrameDecoder()
    while (body := decoder.next_frame()) is None:
        data = sock.recv(4096)
        assert data, "closed without a server hello"
        decoder.feed(data)
    assert body[:4] == MAGIC and body[4] == VERSION
    assert body[5] == STATUS_UNSUPPORTED_VERSION
    assert closed_by_peer(sock)
    sock.close()
    service.assert_serving()


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb({"id": 1, "cmd": "echo", "args": [msgpack.ExtType(5, b"x")]}),
        msgpack.packb({"id": 1, "cmd": "echo", "args": [msgpack.Timestamp(1, 0)]}),
        b"\x91" * 2000 + b"\xc0",  # nested deeper than msgpack's stack
    ],
    ids=["ext", "timestamp", "deep"],
)
def test_refused_msgpack_gets_a_protocol_error_and_runs_nothing(
    service: RunningService, body: bytes
) -> None:
    raw = RawClient(service.raw_socket())
    raw.send(raw.session.seal_frame(body))
    reply = msgpack.unpackb(raw.session.open(raw.read_frame()))
    assert reply["ok"] is False and reply["id"] is None
    assert reply["error"]["code"] == "bad_request"
    assert reply["error"]["type"] == "ProtocolError"
    assert closed_by_peer(raw.sock)
    raw.sock.close()
    service.assert_serving()


def test_the_client_raises_protocol_error_for_a_refused_request(
    service: RunningService,
) -> None:
    with service.client() as client, pytest.raises(ProtocolError, match="extension types"):
        client.call("echo", msgpack.Timestamp(1, 0))


def test_an_offline_password_guess_costs_at_least_10_ms_of_cpu() -> None:
    stretched = crypto.stretch_key(os.urandom(32))  # fresh inputs: nothing cached
    guesses = 5
    started = time.process_time()
    for n in range(guesses):
        crypto.password_key(stretched, "alice", f"guess-{n}")
    per_guess = (time.process_time() - started) / guesses
    assert per_guess >= 0.010, f"{per_guess * 1000:.1f} ms per guess"


def test_clients_derive_the_stretched_keys_once_per_process(service: RunningService) -> None:
    with service.client() as first:
        assert first.call("echo", 1) == 1
    before = crypto.password_keys.cache_info().misses, crypto.stretched_keys.cache_info().misses
    for _ in range(5):  # new clients, new connections: no key is derived again
        with service.client() as client:
            for n in range(20):
                assert client.call("echo", n) == n
    after = crypto.password_keys.cache_info().misses, crypto.stretched_keys.cache_info().misses
    assert after == before


def test_wrong_key_and_wrong_password_get_the_same_bytes_count(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service()
    sizes = []
    for key, password in ((KEY, "wrong"), ("another key of 32 bytes, not it!", "alice-pw")):
        sock = service.raw_socket()
        handshake = ClientHandshake(key.encode(), "alice", password)
        sock.sendall(handshake.hello())
        decoder = FrameDecoder()
        frames: list[bytes] = []
        while len(frames) < 2:
            if (body := decoder.next_frame()) is not None:
                frames.append(body)
                if len(frames) == 1:
                    sock.sendall(handshake.on_server_hello(body))
                continue
            data = sock.recv(4096)
            assert data
            decoder.feed(data)
        sizes.append(len(frames[1]))
        assert closed_by_peer(sock)
        sock.close()
    assert sizes[0] == sizes[1]  # the same sealed {"ok": false}


def test_human_keys_are_told_apart_from_generated_ones() -> None:
    for _ in range(2000):
        assert crypto.human_key_reason(crypto.generate_key()) is None
    assert crypto.human_key_reason(os.urandom(32)) is None
    for human in (
        "correct horse battery staple, then some",
        "mysupersecretpasswordforourappdservice",
        "abababababababababababababababababababab",
        "0123456789abcdef",
        b"\0" * 40,
    ):
        reason = crypto.human_key_reason(human)
        assert reason is not None
        assert str(human) not in reason


def test_a_request_that_decodes_to_too_many_objects_is_refused() -> None:
    from appd.transport.protocol import decode_request, max_objects

    limit = max_objects(1024 * 1024)
    body = pack({"id": 1, "cmd": "echo", "args": [[{}] * 1000] * (limit // 1000 + 1)})
    with pytest.raises(ProtocolError, match="objects"):
        decode_request(body, limit)
    flat = b"\x83\xa2id\x01\xa3cmd\xa4echo\xa4args\xdd" + (limit + 1).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="more than"):
        decode_request(flat + b"\x80" * (limit + 1), limit)
    assert decode_request(pack({"id": 1, "cmd": "x", "args": [0] * 1000}), limit)[2] == [0] * 1000


def test_hellos_are_answered_without_waiting_for_authentication(
    service: RunningService,
) -> None:
    """Fifty connections that only say hello are each answered at once (the server hello
    derives no key) and do not stop the service serving others."""
    socks: list[socket.socket] = []
    try:
        for _ in range(50):
            sock = service.raw_socket()
            sock.sendall(encode_frame(MAGIC + bytes([VERSION]) + os.urandom(32)))
            socks.append(sock)
        for sock in socks:
            sock.settimeout(5)
            assert len(sock.recv(4096)) == 4 + 4 + 2 + 32  # a server hello each
    finally:
        for sock in socks:
            sock.close()
    service.assert_serving()
