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
from typing import Any

import pytest
from measure import peak_rss_kib, rss_kib, threads
from support import wait_for
from transport_service import RawClient, closed_by_peer

from appd.errors import AppdError
from appd.transport.protocol import encode_request

HERE = Path(__file__).resolve().parent


def _raw_client(service: Any) -> Any:
    return RawClient(service.raw_socket())


def _closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    return bool(closed_by_peer(sock, timeout))


@pytest.mark.parametrize(
    ("transport", "mode", "seconds"),
    [("tcp", "connect", 10.0), ("tcp", "hello", 5.0), ("unix", "connect", 6.0),
     ("unix", "hello", 6.0)],
)
def test_a_flood_does_not_lock_out_new_clients(
    make_service: Callable[..., Any], pids_to_kill: list[int], tmp_path: Path,
    transport: str, mode: str, seconds: float,
) -> None:
    """One process opens connections (``connect``), or connections that send a client hello and
    then nothing (``hello``), as fast as it can; at least 95% of the fresh legitimate calls made
    meanwhile succeed, each within 1 s."""
    if transport == "unix":
        service = make_service(path=str(tmp_path / "flooded.sock"))
        address = service.path
    else:
        service = make_service()
        address = f"127.0.0.1:{service.port}"
    with service.client() as warm:
        assert warm.call("echo", 1) == 1  # scrypt keys derived once, before the clock runs
    flooder = subprocess.Popen(
        [sys.executable, str(HERE / "measure.py"), address, str(seconds), mode],
        stdout=subprocess.PIPE, text=True,
    )
    pids_to_kill.append(flooder.pid)
    time.sleep(0.5)  # let the flood reach its rate (a fixed head start, not a wait for a result)
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds - 1.0
    while time.monotonic() < end:
        started = time.monotonic()
        client = service.client(timeout=2, connect_timeout=2)
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
        f"{transport} {mode} flood: {opened} connections in {seconds:.0f} s; legitimate calls: "
        f"{total}, within 1 s: {len(in_time)}, failed: {failures[:3]}, "
        f"median {statistics.median(latencies or [0]) * 1000:.1f} ms, "
        f"max {max(latencies or [0]) * 1000:.1f} ms"
    )
    print(report)
    assert total >= 10, report
    assert opened > 5 * total, report  # it really flooded
    assert len(in_time) >= 0.95 * total, report
    service.assert_serving()


def _empty_maps_request(size: int, chunk: int | None) -> bytes:
    """A request of ``size`` bytes whose args hold empty maps: one flat array of them, or
    arrays of ``chunk`` maps each."""
    head = b"\x83\xa2id\x01\xa3cmd\xa4echo\xa4args"
    if chunk is None:
        count = size - len(head) - 5
        return head + b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count
    per = 5 + chunk
    arrays = (size - len(head) - 5) // per
    one = b"\xdd" + chunk.to_bytes(4, "big") + b"\x80" * chunk
    return head + b"\xdd" + arrays.to_bytes(4, "big") + one * arrays


@pytest.mark.parametrize("chunk", [None, 200_000], ids=["flat", "chunked"])
def test_a_16_mib_frame_of_empty_maps_is_refused_within_64_mib(
    make_service: Callable[..., Any], chunk: int | None
) -> None:
    service = make_service()
    pid = service.proc.pid
    service.assert_serving()
    raw = _raw_client(service)
    rss_before, peak_before = rss_kib(pid), peak_rss_kib(pid)
    body = _empty_maps_request(16 * 1024 * 1024 - 32, chunk)  # the sealed frame: exactly 16 MiB
    raw.send(raw.session.seal_frame(body))
    reply = raw.session.open(raw.read_frame())
    assert b"bad_request" in reply and (b"objects" in reply or b"more than" in reply)
    assert _closed_by_peer(raw.sock)
    grown = rss_kib(pid) - rss_before
    peak = peak_rss_kib(pid) - peak_before
    print(f"16 MiB of empty maps ({'flat' if chunk is None else 'chunked'}): RSS +{grown} KiB "
          f"(peak +{peak} KiB)")
    assert grown < 64 * 1024
    assert peak < 64 * 1024  # not even for a moment
    raw.sock.close()
    service.assert_serving()


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_trickling_peer_is_closed_within_idle_timeout_plus_frame_timeout(
    make_service: Callable[..., Any], concurrency: int
) -> None:
    idle, frame = 2.0, 3.0
    service = make_service(idle_timeout=idle, frame_timeout=frame, concurrency=concurrency)
    raw = _raw_client(service)
    started = time.monotonic()
    frame_bytes = raw.session.seal_frame(encode_request(1, "echo", ["x"], {}))
    sock: socket.socket = raw.sock
    sock.settimeout(0.05)
    closed_at = None
    for byte in frame_bytes:
        try:
            sock.send(bytes([byte]))
            if sock.recv(4096) == b"":
                closed_at = time.monotonic()
                break
        except TimeoutError:
            pass
        except OSError:
            closed_at = time.monotonic()
            break
        deadline = time.monotonic() + 1.5  # one byte every 1.5 s, watching for the close
        while time.monotonic() < deadline:
            try:
                if sock.recv(4096) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at = time.monotonic()
                break
        if closed_at is not None:
            break
        assert time.monotonic() - started < idle + frame + 5, "the trickler is still connected"
    assert closed_at is not None
    lasted = closed_at - started
    print(f"trickler (concurrency {concurrency}) closed after {lasted:.2f} s")
    assert lasted <= idle + frame + 1.0  # the sweep runs every 0.25 s
    sock.close()
    service.assert_serving()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_clients_that_never_read_hold_no_thread_past_the_write_timeout(
    make_service: Callable[..., Any], concurrency: int
) -> None:
    write_timeout = 2.0
    service = make_service(write_timeout=write_timeout, concurrency=concurrency)
    pid = service.proc.pid
    service.assert_serving()
    baseline = threads(pid)
    payload = "x" * (4 * 1024 * 1024)
    readers = []
    for _ in range(20):
        raw = _raw_client(service)
        sock: socket.socket = raw.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.send(raw.session.seal_frame(encode_request(1, "echo", [payload], {})))
        readers.append(sock)
    sent = time.monotonic()
    peak = threads(pid)
    # Each writing thread gives up write_timeout after it started to block; the last one
    # started as its request arrived, just before ``sent``.  (Margin: a loaded machine.)
    wait_for(
        lambda: threads(pid) <= baseline + 1, timeout=write_timeout + 3.0,
        message="the threads writing to clients that never read to end",
    )
    freed = time.monotonic() - sent
    print(f"20 non-reading clients (concurrency {concurrency}): threads {baseline} -> "
          f"{peak} -> back within {freed:.2f} s")
    for sock in readers:
        assert _closed_by_peer(sock, timeout=5)
        sock.close()
    service.assert_serving()
