"""Every kind of bad input the service must survive, each against a real service process.

In every case the service goes on serving well-behaved clients, and no handler runs for a frame
that failed authentication (the ``count`` command would show it).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from transport_service import KEY, RawClient, RunningService, closed_by_peer

from appd import AuthenticationFailed, RemoteError, RequestTimeout
from appd.errors import ConnectionLost
from appd.transport.protocol import encode_request, pack


def hits(service: RunningService) -> int:
    with service.client() as client:
        return int(client.call("hits"))


def test_random_bytes_instead_of_a_hello(service: RunningService) -> None:
    sock = service.raw_socket()
    sock.sendall(struct.pack(">I", 37) + os.urandom(37))
    assert closed_by_peer(sock)
    sock.close()
    service.assert_serving()


def test_random_garbage_stream_instead_of_a_hello(service: RunningService) -> None:
    sock = service.raw_socket()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(200))
    assert closed_by_peer(sock)
    sock.close()
    service.assert_serving()


def test_4_gib_length_prefix_before_handshake_closes_without_reading(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(handshake_timeout=60.0)
    sock = service.raw_socket()
    started = time.monotonic()
    sock.sendall(b"\xff\xff\xff\xff")
    assert closed_by_peer(sock)
    # Closed at once, not at the (60 s) handshake timeout: the body was never awaited.
    assert time.monotonic() - started < 5
    sock.close()
    service.assert_serving()


def test_4_gib_length_prefix_after_authentication_closes_without_reading(
    service: RunningService,
) -> None:
    raw = RawClient(service.raw_socket())
    rss_before = _rss_kib(service.proc.pid)
    started = time.monotonic()
    raw.sock.sendall(b"\xff\xff\xff\xff" + b"x" * 1000)
    assert closed_by_peer(raw.sock)
    assert time.monotonic() - started < 5
    assert _rss_kib(service.proc.pid) - rss_before < 64 * 1024  # nothing like 4 GiB allocated
    raw.sock.close()
    service.assert_serving()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_silent_client_is_closed_after_the_handshake_timeout(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(handshake_timeout=1.0)
    silent = service.raw_socket()
    started = time.monotonic()
    service.assert_serving()  # others are served while the silent one waits
    assert closed_by_peer(silent, timeout=10)
    assert time.monotonic() - started >= 0.8
    silent.close()
    service.assert_serving()


def test_wrong_key_is_refused(service: RunningService) -> None:
    with service.client(key="another-key-of-enough-length") as client, pytest.raises(
        AuthenticationFailed
    ):
        client.call("count")
    assert hits(service) == 0


def test_wrong_username_and_wrong_password_get_the_same_error(service: RunningService) -> None:
    with service.client(user="mallory") as client, pytest.raises(AuthenticationFailed) as bad_user:
        client.call("count")
    with service.client(password="guess") as client, pytest.raises(AuthenticationFailed) as bad_pw:
        client.call("count")
    assert str(bad_user.value) == str(bad_pw.value)
    assert "guess" not in str(bad_pw.value) and KEY not in str(bad_pw.value)
    assert hits(service) == 0


def test_a_second_user_may_log_in(service: RunningService) -> None:
    with service.client(user="bob", password="bob-pw") as client:
        assert client.send_request("whoami")[0][0] == "bob"


def test_replay_of_a_recorded_session_is_refused(service: RunningService) -> None:
    raw = RawClient(service.raw_socket())
    raw.send(raw.session.seal_frame(encode_request(1, "count", [], {})))
    raw.read_frame()
    recorded = bytes(raw.sent)
    raw.sock.close()
    assert hits(service) == 1
    replay = service.raw_socket()
    replay.sendall(recorded)  # the service picks a fresh nonce: nothing recorded is valid now
    assert closed_by_peer(replay)
    replay.close()
    assert hits(service) == 1


def test_one_flipped_bit_in_a_sealed_frame_closes_the_connection(
    service: RunningService,
) -> None:
    raw = RawClient(service.raw_socket())
    frame = bytearray(raw.session.seal_frame(encode_request(1, "count", [], {})))
    frame[10] ^= 0x01
    raw.send(bytes(frame))
    assert closed_by_peer(raw.sock)
    raw.sock.close()
    assert hits(service) == 0


def test_reordered_frames_close_the_connection(service: RunningService) -> None:
    raw = RawClient(service.raw_socket())
    first = raw.session.seal_frame(encode_request(1, "count", [], {}))
    second = raw.session.seal_frame(encode_request(2, "count", [], {}))
    raw.send(second + first)
    assert closed_by_peer(raw.sock)
    raw.sock.close()
    assert hits(service) == 0


def test_an_authenticated_frame_that_is_not_a_request_gets_an_error(
    service: RunningService,
) -> None:
    raw = RawClient(service.raw_socket())
    raw.send(raw.session.seal_frame(pack({"id": 7, "cmd": 42})))
    reply = raw.session.open(raw.read_frame())
    assert b"bad_request" in reply
    raw.sock.close()
    service.assert_serving()


def test_client_disconnecting_mid_request(service: RunningService) -> None:
    raw = RawClient(service.raw_socket())
    raw.send(raw.session.seal_frame(encode_request(1, "sleep", [0.3], {})))
    raw.sock.close()  # gone before the reply
    half = RawClient(service.raw_socket())
    frame = half.session.seal_frame(encode_request(1, "count", [], {}))
    half.send(frame[: len(frame) // 2])
    half.sock.close()  # gone in the middle of a frame
    service.assert_serving()
    assert hits(service) == 0


def test_handler_that_raises_gives_remote_error(service: RunningService) -> None:
    with service.client() as client:
        with pytest.raises(RemoteError) as info:
            client.call("boom", "the outlet is on fire")
        assert info.value.remote_type == "ValueError"
        assert info.value.remote_message == "the outlet is on fire"
        assert client.call("echo", 1) == 1  # same connection, still serving


@pytest.mark.parametrize("concurrency", [1, 2])
def test_handler_that_raises_system_exit_gives_remote_error(
    make_service: Callable[..., RunningService], concurrency: int
) -> None:
    service = make_service(request_timeout=2.0, concurrency=concurrency)
    with service.client() as client:
        with pytest.raises(RemoteError) as info:
            client.call("exit", 3)
        assert info.value.remote_type == "SystemExit"
        assert client.call("echo", 1) == 1  # same connection, still serving
    service.assert_serving()


def test_unknown_command_gives_remote_error(service: RunningService) -> None:
    with service.client() as client, pytest.raises(RemoteError) as info:
        client.call("no_such_command")
    assert info.value.remote_type == "UnknownCommand"
    assert "no_such_command" in info.value.remote_message


def test_handler_that_hangs_past_the_request_timeout(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(request_timeout=1.0, concurrency=1)
    with service.client() as client, pytest.raises(RequestTimeout):
        client.call("sleep", 8)
    started = time.monotonic()
    service.assert_serving()  # the hung handler's slot was given back
    assert time.monotonic() - started < 5


def test_handler_returning_an_unserializable_value(service: RunningService) -> None:
    with service.client() as client:
        with pytest.raises(RemoteError) as info:
            client.call("unserializable")
        assert info.value.remote_type == "TypeError"
        assert client.call("echo", 2) == 2


def test_a_thousand_connections_at_once(service: RunningService) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", service.port), timeout=10))
        service.assert_serving()
        good: list[object] = []

        def call() -> None:
            with service.client() as client:
                good.append(client.call("echo", "ok"))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert good == ["ok"] * 8
    finally:
        for sock in socks:
            sock.close()
    service.assert_serving()


def test_reply_lost_is_not_resent(service: RunningService) -> None:
    raw_service_pid = service.proc.pid
    with service.client(timeout=10) as client:
        client.call("echo", 0)

        def kill_soon() -> None:
            time.sleep(0.3)
            os.kill(raw_service_pid, 9)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        with pytest.raises(ConnectionLost):
            client.call("sleep", 5)
        killer.join()
