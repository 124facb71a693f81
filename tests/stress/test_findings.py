"""Each way a hostile peer once took a service down, replayed against a real service process.

Figures and thresholds are the ones docs/reliability.md reports; timing thresholds leave room
for a loaded two-core machine but still assert what docs/security.md promises.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appd import SecureSocketAppClient
from appd.errors import AppdError

HERE = Path(__file__).resolve().parent
KEY = "0123456789abcdef-test-key"


def _fixtures() -> object:
    return sys.modules["appd_transport_fixtures"]


def _raw_client(service: object) -> object:
    return _fixtures().RawClient(service.raw_socket())  # type: ignore[attr-defined]


def _closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    return bool(_fixtures().closed_by_peer(sock, timeout))  # type: ignore[attr-defined]


def test_a_connect_flood_does_not_lock_out_new_clients(
    make_service: Callable[..., object], pids_to_kill: list[int]
) -> None:
    """One process opens connections as fast as it can for 10 s; at least 95% of fresh
    legitimate calls made meanwhile succeed, each within 1 s."""
    _flood_while_calling(make_service, pids_to_kill, "connect")


def test_a_hello_flood_does_not_lock_out_new_clients(
    make_service: Callable[..., object], pids_to_kill: list[int]
) -> None:
    """The same with connections that send a client hello and then nothing: the service never
    derives a key for a hello, so answering them is cheap."""
    _flood_while_calling(make_service, pids_to_kill, "hello", seconds=5.0)


def _flood_while_calling(
    make_service: Callable[..., object], pids_to_kill: list[int], mode: str,
    seconds: float = 10.0,
) -> None:
    service = make_service(handshake_timeout=5.0)
    port = service.port  # type: ignore[attr-defined]
    with SecureSocketAppClient("127.0.0.1", port, "alice", "alice-pw", KEY) as warm:
        assert warm.call("echo", 1) == 1  # scrypt keys derived once, before the clock runs
    flooder = subprocess.Popen(
        [sys.executable, str(HERE / "measure.py"), "127.0.0.1", str(port), str(seconds), mode],
        stdout=subprocess.PIPE, text=True,
    )
    pids_to_kill.append(flooder.pid)
    time.sleep(0.5)  # let the flood reach its rate (a fixed head start, not a wait for a result)
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds - 1.0
    while time.monotonic() < end:
        started = time.monotonic()
        client = SecureSocketAppClient(
            "127.0.0.1", port, "alice", "alice-pw", KEY, timeout=2, connect_timeout=2
        )
        try:
            assert client.call("echo", "legit") == "legit"
        except AppdError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        else:
            latencies.append(time.monotonic() - started)
        finally:
            client.close()
        time.sleep(0.1)
    out, _ = flooder.communicate(timeout=30)
    opened = int(out.strip() or 0)
    total = len(latencies) + len(failures)
    in_time = [latency for latency in latencies if latency <= 1.0]
    report = (
        f"{mode} flood: {opened} connections in {seconds} s; legitimate calls: {total}, "
        f"within 1 s: {len(in_time)}, failed: {failures[:3]}, "
        f"median {statistics.median(latencies or [0]) * 1000:.1f} ms, "
        f"max {max(latencies or [0]) * 1000:.1f} ms"
    )
    print(report)
    assert total >= 20, report
    assert opened > 5 * total, report  # it really flooded
    assert len(in_time) >= 0.95 * total, report
    service.assert_serving()  # type: ignore[attr-defined]
