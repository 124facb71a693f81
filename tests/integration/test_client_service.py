"""Clients and services over real sockets: payloads, limits, fork, threads, asyncio, shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transport_service import KEY, RunningService, stop_service

from appd import (
    AddressInUse,
    AsyncSecureSocketAppClient,
    ConfigurationError,
    ConnectFailed,
    RemoteError,
    SecureSocketAppClient,
    SecureSocketAppService,
    ServiceBusy,
)


def test_one_mib_request_and_reply_round_trip_intact(service: RunningService) -> None:
    payload = os.urandom(1024 * 1024)
    with service.client() as client:
        assert client.call("echo", payload) == payload
        text = "é" * (512 * 1024)
        assert client.call("echo", text) == text


def test_args_and_kwargs_travel(service: RunningService) -> None:
    with service.client() as client:
        res_args, res_kwargs = client.send_request("echo", 1, "two", b"3", x=[4.5, None])
        assert res_args == [[[1, "two", b"3"], {"x": [4.5, None]}]]
        assert res_kwargs == {}


def test_request_goes_through_process_request_with_user_and_peer(
    service: RunningService,
) -> None:
    with service.client(user="bob", password="bob-pw") as client:
        (user, peer), _ = client.send_request("whoami")
    assert user == "bob"
    assert peer.startswith("127.0.0.1:")


def test_call_goes_through_a_subclass_send_request(service: RunningService) -> None:
    """call() takes a shortcut past send_request only where send_request is the client's own:
    a subclass's override serves both."""
    sent: list[str] = []

    class Recording(SecureSocketAppClient):
        def send_request(self, reqcmd: str, *args: Any, **kwargs: Any) -> tuple[
            list[Any], dict[str, Any]
        ]:
            sent.append(reqcmd)
            return super().send_request(reqcmd, *args, **kwargs)

    with Recording("127.0.0.1", service.port, "alice", "alice-pw", KEY) as client:
        assert client.call("echo", 7) == 7
        assert client.send_request("echo", 8) == ([8], {})
    assert sent == ["echo", "echo"]
    with service.client() as plain:
        assert plain.call("echo", 9) == 9


def test_unserializable_argument_is_a_clear_local_error(service: RunningService) -> None:
    with service.client() as client, pytest.raises(TypeError, match="cannot be serialized"):
        client.call("echo", object())


def test_async_handler(service: RunningService) -> None:
    with service.client() as client:
        assert client.call("async_echo", {"a": 1}) == {"a": 1}


def test_requests_beyond_the_queue_get_service_busy(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(concurrency=1, max_queue=0)
    slow = service.client()
    thread = threading.Thread(target=slow.call, args=("sleep", 1.5))
    thread.start()
    try:
        with service.client() as client:
            deadline = time.monotonic() + 10
            with pytest.raises(ServiceBusy):
                while time.monotonic() < deadline:  # until the slow request holds the slot
                    client.call("echo", 1)
    finally:
        thread.join()
        slow.close()
    service.assert_serving()


def test_waiting_past_queue_timeout_gets_service_busy(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(concurrency=1, max_queue=4, queue_timeout=0.3)
    slow = service.client()
    thread = threading.Thread(target=slow.call, args=("sleep", 3))
    thread.start()
    try:
        with service.client() as client, pytest.raises(ServiceBusy, match="queue_timeout"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                client.call("echo", 1)
    finally:
        thread.join()
        slow.close()


def test_connections_beyond_max_connections_get_service_busy(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(max_connections=2)
    first, second = service.client(), service.client()
    first.call("echo", 1)
    second.call("echo", 2)
    with service.client() as third, pytest.raises(ServiceBusy):
        third.call("echo", 3)
    first.close()
    second.close()


def test_concurrency_lets_handlers_overlap(make_service: Callable[..., RunningService]) -> None:
    service = make_service(concurrency=4)
    clients = [service.client() for _ in range(4)]
    for client in clients:  # connected, and the service serving, before the clock starts
        assert client.call("echo", 0) == 0
    threads = [threading.Thread(target=c.call, args=("sleep", 1.0)) for c in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 3.5  # four 1 s handlers, not one after another
    for client in clients:
        client.close()


def test_one_client_shared_by_threads(service: RunningService) -> None:
    client = service.client()
    results: list[int] = []
    lock = threading.Lock()

    def work(base: int) -> None:
        for i in range(50):
            value = client.call("echo", base + i)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert sorted(results) == sorted(n * 1000 + i for n in range(4) for i in range(50))


def test_forked_child_uses_its_own_connection(service: RunningService) -> None:
    client = service.client()
    assert client.call("echo", "parent") == "parent"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = client.call("echo", "child") == "child"
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read_end)
    assert client.call("echo", "parent again") == "parent again"  # parent's stream intact
    client.close()


def test_reconnects_after_the_service_closed_an_idle_connection(
    make_service: Callable[..., RunningService],
) -> None:
    service = make_service(idle_timeout=0.5)
    with service.client() as client:
        assert client.call("count") == 1
        time.sleep(1.5)  # let the idle timeout close the connection (the point of the test)
        assert client.call("count") == 2  # transparently reconnected, nothing ran twice


def test_connect_failed_when_nothing_listens() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = SecureSocketAppClient("127.0.0.1", port, "alice", "alice-pw", KEY, connect_timeout=2)
    with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}"):
        client.call("echo", 1)


def test_short_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        SecureSocketAppClient("127.0.0.1", 1, "u", "p", "short-secret")
    assert "short-secret" not in str(info.value)


def test_secrets_never_in_repr(service: RunningService) -> None:
    client = service.client()
    assert "alice-pw" not in repr(client) and KEY not in repr(client)


def test_unix_socket_service(make_service: Callable[..., RunningService], tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    service = make_service(path=path)
    assert service.path == path
    with service.client() as client:
        assert client.call("echo", "over unix") == "over unix"


def test_address_in_use_names_service_and_address(service: RunningService) -> None:
    class Clash(SecureSocketAppService):
        host = "127.0.0.1"
        port = service.port
        key = KEY
        username, password = "u", "p"

    with pytest.raises(AddressInUse, match=rf"'clash'.*127\.0\.0\.1:{service.port}"):
        Clash().bind()


def test_graceful_stop_finishes_the_request_in_flight(service: RunningService) -> None:
    client = service.client()
    # Connected and authenticated first (key stretching included), so the request below
    # reaches the handler at once, however busy the machine.
    assert client.call("echo", 1) == 1
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(client.call("sleep", 1.0)))
    thread.start()
    time.sleep(0.3)  # let the request reach the handler (the point of the test)
    assert stop_service(service) == 0
    thread.join()
    assert result == [1.0]
    client.close()


def test_remote_error_for_every_handler_failure_keeps_the_connection(
    service: RunningService,
) -> None:
    with service.client() as client:
        for _ in range(3):
            with pytest.raises(RemoteError):
                client.call("boom", "again")
        assert client.call("echo", "fine") == "fine"


def test_async_client(service: RunningService) -> None:
    async def main() -> list[object]:
        async with AsyncSecureSocketAppClient(
            "127.0.0.1", service.port, "alice", "alice-pw", KEY
        ) as client:
            first = await client.call("echo", "async")
            many = await asyncio.gather(*(client.call("echo", i) for i in range(20)))
            with pytest.raises(RemoteError):
                await client.call("boom", "x")
            return [first, *many]

    assert asyncio.run(main()) == ["async", *range(20)]
