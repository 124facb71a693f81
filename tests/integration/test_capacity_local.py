"""The local capacity backend with real processes: flock'ed slot files shared on one host."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capacity_support import Holder, assert_fencing_order, peak_holders, read_churn_log
from support import wait_for

import appd
from appd.capacity import Capacity
from appd.capacity.local import LocalBackend
from appd.config import CapacityConfig
from appd.errors import CapacityTimeout, DeadlineExceeded


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    return {"name": "pdu", "limit": 2, "directory": tmp_path / "capacities",
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


def test_two_processes_share_a_limit_of_two_and_kill_9_frees_a_slot_at_once(
    settings: dict[str, Any], capacity: Capacity, holders: Callable[..., Holder]
) -> None:
    first, second = holders(settings, "hold"), holders(settings, "hold")
    tokens = [first.token(), second.token()]
    status = capacity.status()
    assert status.limit == 2
    assert sorted(h.holder.split(":")[1] for h in status.holders) == sorted(
        [str(first.pid), str(second.pid)]
    )
    assert sorted(h.token for h in status.holders if h.token) == sorted(tokens)
    with pytest.raises(CapacityTimeout, match="'pdu'"):
        capacity.acquire_lease(timeout=0.2)

    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    started = time.monotonic()
    with capacity.acquire(timeout=0) as lease:  # one attempt: the kernel freed the slot
        assert time.monotonic() - started < 0.5
        assert lease.token > max(tokens)
        assert not lease.lost
    assert "lost" not in second.finish()  # the other holder kept its lease to the end


def test_waiters_are_counted_and_granted_when_a_slot_frees(
    settings: dict[str, Any], capacity: Capacity, holders: Callable[..., Holder]
) -> None:
    leases = [capacity.acquire_lease(), capacity.acquire_lease()]
    waiter = holders(settings, "hold")
    wait_for(lambda: capacity.status().waiters == 1, message="one waiter")
    leases[0].release()
    assert waiter.token() > leases[1].token
    assert capacity.status().waiters == 0
    leases[1].release()
    waiter.finish()
    assert capacity.status().holders == ()


@pytest.mark.slow
def test_churning_processes_never_exceed_the_limit_and_tokens_follow_releases(
    settings: dict[str, Any], holders: Callable[..., Holder], tmp_path: Path
) -> None:
    log = tmp_path / "churn.log"
    workers = [holders(settings, "churn", "40", str(log), "0.002") for _ in range(4)]
    for worker in workers:
        assert '"errors": {}' in worker.finish()
    leases = read_churn_log(log)
    assert len(leases) == 160
    assert peak_holders(leases) == 2  # the limit, reached and never passed
    assert_fencing_order(leases)


def test_a_lease_is_released_once_and_tokens_increase_within_a_process(
    capacity: Capacity,
) -> None:
    tokens = []
    for _ in range(5):
        with capacity.acquire() as lease:
            tokens.append(lease.token)
        lease.release()  # again: nothing happens
        assert lease.released and not lease.lost
    assert tokens == sorted(set(tokens))


def test_an_acquire_timeout_of_zero_tries_once(capacity: Capacity) -> None:
    with capacity.acquire(), capacity.acquire():
        started = time.monotonic()
        with pytest.raises(CapacityTimeout, match="within 0 s"):
            capacity.acquire_lease(timeout=0)
        assert time.monotonic() - started < 0.1


def test_no_slot_is_taken_for_a_call_whose_deadline_has_passed(capacity: Capacity) -> None:
    """Even with every slot free: nobody waits for what the lease would guard."""
    with appd.deadline(0), pytest.raises(DeadlineExceeded, match="not executed"):
        capacity.acquire_lease()
    assert capacity.status().holders == ()
    with appd.deadline(5), capacity.acquire() as lease:  # time left: granted as before
        assert not lease.lost


def test_a_removed_slot_directory_makes_the_lease_lost(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    capacity = Capacity(CapacityConfig(**{**settings, "lease_ttl": 0.3}))
    try:
        lease = capacity.acquire_lease()
        lost: list[int] = []
        lease.on_lost(lambda lost_lease: lost.append(lost_lease.token))
        for path in (tmp_path / "capacities").glob("pdu.slot*"):
            path.unlink()
        wait_for(lease.lost_event.is_set, timeout=5, message="lease lost")
        assert lost == [lease.token]
        lease.release()
    finally:
        capacity.close()


def test_async_with_holds_a_lease_for_the_block(capacity: Capacity) -> None:
    async def handler() -> int:
        async with capacity.acquire() as lease:
            assert [h.token for h in capacity.status().holders] == [lease.token]
            return lease.token

    assert asyncio.run(handler()) > 0
    assert capacity.status().holders == ()


def test_many_async_waiters_never_hold_up_the_releases_they_wait_for(
    settings: dict[str, Any],
) -> None:
    capacity = Capacity(CapacityConfig(**{**settings, "limit": 1}))

    async def handler(tokens: list[int]) -> None:
        async with capacity.acquire(timeout=20) as lease:
            tokens.append(lease.token)
            await asyncio.sleep(0.002)

    async def main() -> list[int]:
        tokens: list[int] = []
        await asyncio.wait_for(asyncio.gather(*(handler(tokens) for _ in range(40))), 30)
        return tokens

    try:
        tokens = asyncio.run(main())
        assert len(tokens) == 40 and tokens == sorted(set(tokens))
    finally:
        capacity.close()


def test_a_cancelled_async_wait_leaks_no_slot(capacity: Capacity) -> None:
    async def main() -> None:
        held = [capacity.acquire_lease(), capacity.acquire_lease()]
        waiting = asyncio.ensure_future(capacity.acquire(timeout=5).__aenter__())
        await asyncio.sleep(0.1)
        waiting.cancel()
        held[0].release()  # the waiting thread may get it after the task was cancelled
        with pytest.raises(asyncio.CancelledError):
            await waiting
        held[1].release()

    asyncio.run(main())
    wait_for(lambda: capacity.status().holders == (), message="no slot left held")


def test_a_release_blanks_the_holders_record_and_never_truncates_the_slot_file(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    """Truncating a slot file to zero and writing it again makes ext4 flush it to disk when the
    release closes it (a write per release, and a later wake-up of the waiters): the record is
    written over the file's first bytes and blanked instead."""
    capacity = Capacity(CapacityConfig(**{**settings, "limit": 1}))
    slot = tmp_path / "capacities" / "pdu.slot0"
    try:
        lease = capacity.acquire_lease()
        held = slot.read_bytes()
        assert len(held) == 256 and f'"token": {lease.token}' in held.decode()
        assert [h.token for h in capacity.status().holders] == [lease.token]
        lease.release()
        released = slot.read_bytes()
        assert len(released) == 256 and not released.strip()
        assert capacity.status().holders == ()
        again = capacity.acquire_lease()  # written over the blank record, not after it
        assert len(slot.read_bytes()) == 256
        assert [h.token for h in capacity.status().holders] == [again.token]
        again.release()
    finally:
        capacity.close()


def test_a_longer_record_is_blanked_whole_and_never_trails_a_shorter_one(tmp_path: Path) -> None:
    backend = LocalBackend("pdu", 1, tmp_path / "capacities")
    long_holder = "h" * 300  # a record past the 256 bytes of the usual one
    grant = backend.try_acquire(long_holder)
    assert grant is not None
    assert [h.holder for h in backend.status().holders] == [long_holder]
    backend.release(grant)
    assert not (tmp_path / "capacities" / "pdu.slot0").read_bytes().strip()
    grant = backend.try_acquire("short")
    assert grant is not None
    assert [h.holder for h in backend.status().holders] == ["short"]  # not "(starting)"
    backend.release(grant)
