"""Fuzzing a real service with hypothesis: generated and mutated frames, before and after
authentication.  The service never crashes, stays within its memory bound, and answers every
frame or closes the connection, within the deadlines it was given."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from measure import rss_kib
from transport_service import RawClient, start_service, stop_service

from appd.transport.protocol import (
    MAGIC,
    VERSION,
    FrameDecoder,
    encode_frame,
    encode_request,
)

#: How long a peer may wait for an answer or a close: frame_timeout and handshake_timeout (0.3 s
#: at most) plus the sweep interval, with room for a loaded machine.
VERDICT_WITHIN = 6.0
MEMORY_BOUND_KIB = 64 * 1024


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    service = start_service(
        tmp_path_factory.mktemp("fuzz"),
        {"handshake_timeout": 0.3, "frame_timeout": 0.2, "idle_timeout": 1.0,
         "max_frame_size": 1024 * 1024},
    )
    service.assert_serving()
    service.rss_before = rss_kib(service.proc.pid)
    yield service
    stop_service(service)


def _verdict(sock: socket.socket) -> str:
    """``answered`` (a whole frame came back) or ``closed``; fails past VERDICT_WITHIN."""
    sock.settimeout(VERDICT_WITHIN)
    decoder = FrameDecoder(64 * 1024 * 1024)
    try:
        while decoder.next_frame() is None:
            data = sock.recv(65536)
            if not data:
                return "closed"
            decoder.feed(data)
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except TimeoutError:
        raise AssertionError("the service neither answered nor closed") from None
    return "answered"


def _check_alive(service: Any) -> None:
    assert service.proc.poll() is None, "the service crashed"
    grown = rss_kib(service.proc.pid) - service.rss_before
    assert grown < MEMORY_BOUND_KIB, f"RSS grew by {grown} KiB"


hello = MAGIC + bytes([VERSION]) + bytes(32)


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for index, value in flips:
        if buf:
            buf[index % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


fuzz_settings = settings(
    max_examples=100, deadline=None, suppress_health_check=list(HealthCheck)
)
flips = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=4)


@fuzz_settings
@given(
    st.one_of(
        st.binary(max_size=200).map(encode_frame),
        st.binary(max_size=300),
        st.tuples(st.just(encode_frame(hello)), flips, st.none() | st.integers(0, 45)).map(
            lambda t: _mutate(*t)
        ),
    )
)
def test_before_authentication(fuzzed: Any, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=5) as sock:
        sock.sendall(data)
        verdict = _verdict(sock)
        assert verdict in ("answered", "closed")
    _check_alive(fuzzed)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=5),
    max_leaves=20,
)


def _body(kind: str, value: Any, noise: bytes) -> bytes:
    if kind == "request":
        return encode_request(1, "echo", [value], {})
    if kind == "any":
        return msgpack.packb(value, use_bin_type=True)
    if kind == "ext":
        return msgpack.packb([msgpack.ExtType(3, noise)], use_bin_type=True)
    return noise


@fuzz_settings
@given(
    st.sampled_from(["request", "any", "ext", "noise"]),
    msgpack_values,
    st.binary(max_size=100),
    flips,
    st.sampled_from(["sealed", "mutated-sealed", "truncated-sealed"]),
)
def test_after_authentication(
    fuzzed: Any, kind: str, value: Any, noise: bytes, changes: list[tuple[int, int]], how: str
) -> None:
    raw = RawClient(fuzzed.raw_socket())
    frame = raw.session.seal_frame(_body(kind, value, noise))
    if how == "mutated-sealed" and changes:
        frame = frame[:4] + _mutate(frame[4:], changes, None)
    elif how == "truncated-sealed":
        frame = frame[: max(4, len(frame) - 1 - len(changes))]
    raw.sock.sendall(frame)
    verdict = _verdict(raw.sock)
    if how == "sealed":
        assert verdict == "answered"  # a well-sealed frame always gets a reply
    raw.sock.close()
    _check_alive(fuzzed)


def test_the_fuzzed_service_still_serves(fuzzed: Any) -> None:
    fuzzed.assert_serving()
    _check_alive(fuzzed)
    assert os.path.exists(f"/proc/{fuzzed.proc.pid}")

