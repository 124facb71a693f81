"""A Redis that stops answering (frozen with SIGSTOP) fails callers fast: CapacityUnavailable
within the backend's socket timeout, as docs/capacity.md says, never a hang."""

from __future__ import annotations

import os
import signal
import time

import pytest
from redis_server import RedisServer

from appd.capacity import Capacity
from appd.capacity.redis_backend import SOCKET_TIMEOUT
from appd.config import CapacityConfig
from appd.errors import CapacityUnavailable

pytest.importorskip("redis")

#: What a caller may wait beyond one socket timeout (scheduling on a loaded machine).
SLACK = 1.0


@pytest.mark.parametrize("lease_ttl", [10.0, 1.5])
def test_a_frozen_redis_gives_capacity_unavailable_within_the_socket_timeout(
    redis_server: RedisServer, lease_ttl: float
) -> None:
    capacity = Capacity(CapacityConfig("pdu", 1, redis_server.url, lease_ttl=lease_ttl,
                                       acquire_timeout=30.0))
    bound = max(0.5, min(SOCKET_TIMEOUT, lease_ttl / 3))
    try:
        first = capacity.acquire_lease(timeout=1)  # the one slot is held: a second one waits
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            for _ in range(2):  # a waiter, then a caller on a fresh attempt
                started = time.monotonic()
                with pytest.raises(CapacityUnavailable) as info:
                    capacity.acquire_lease(timeout=30)
                took = time.monotonic() - started
                assert took < bound + SLACK, f"{took:.2f} s (bound {bound} s)"
                assert "Timeout" in str(info.value)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        # Back without a restart of anything.
        first.release()
        with capacity.acquire(timeout=5):
            pass
    finally:
        capacity.close()
