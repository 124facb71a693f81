"""Deadlines against a real service process: a call nobody waits for any more never starts.

The ledger: the service's ``device`` command appends when each handler started (the monotonic
clock, which every process of the host shares) and the caller's tag; each caller knows its own
deadline.  No handler may start after its caller's deadline (20 ms of slack).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from capacity_support import Holder
from support import wait_for
from transport_service import RawClient, RunningService

import appd
from appd import (
    AsyncSecureSocketAppClient,
    DeadlineExceeded,
    RequestTimeout,
    SecureSocketAppClient,
)
from appd.transport.protocol import decode_reply, encode_request

SLACK = 0.02


def read_ledger(ledger: Path) -> dict[str, float]:
    if not ledger.exists():
        return {}
    return {tag: float(at) for tag, at in
            (line.split() for line in ledger.read_text().splitlines())}


@pytest.mark.serial  # 20 ms of slack: timed alone, not beside a full parallel suite
def test_no_handler_starts_after_its_callers_deadline(
    make_service: Callable[..., RunningService], tmp_path: Path
) -> None:
    """The issue's scenario: concurrency = 1, a 100 ms command, 10 callers at once with
    timeout = 0.3."""
    service = make_service(concurrency=1, max_queue=64, queue_timeout=10.0)
    ledger = tmp_path / "ledger"
    clients = [service.client(timeout=0.3) for _ in range(10)]
    for client in clients:  # connected (and keys derived) before the race starts
        for _ in range(20):  # a loaded machine may answer one of these late
            try:
                assert client.call("echo", 1) == 1
                break
            except RequestTimeout:
                continue
    start = threading.Barrier(len(clients))
    deadlines: dict[str, float] = {}
    outcomes: dict[str, BaseException | str] = {}

    def caller(tag: str, client: SecureSocketAppClient) -> None:
        start.wait()
        deadlines[tag] = time.monotonic() + client.timeout
        try:
            outcomes[tag] = client.call("device", str(ledger), tag, 0.1)
        except RequestTimeout as exc:
            outcomes[tag] = exc

    threads = [threading.Thread(target=caller, args=(f"c{i}", c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    started = read_ledger(ledger)
    time.sleep(1.2)  # anything still queued would have run by now
    assert read_ledger(ledger) == started, "a request ran after its caller had gone"

    late = {tag: at - deadlines[tag] for tag, at in started.items() if at > deadlines[tag] + SLACK}
    assert not late, f"handlers started past their caller's deadline by {late}"
    ran = [tag for tag, outcome in outcomes.items() if outcome == tag]
    assert 1 <= len(ran) <= 4
    assert set(ran) <= set(started)
    expired = 0
    for tag, outcome in outcomes.items():
        if outcome == tag:
            continue
        assert isinstance(outcome, RequestTimeout), outcome
        if isinstance(outcome, DeadlineExceeded) or outcome.not_executed:
            assert outcome.not_executed
            assert "not executed" in str(outcome)
            assert tag not in started, f"{tag} said not executed, but it ran"
            expired += 1
        else:  # may have run: only a call that did start may say so
            assert "may have run" in str(outcome)
            assert tag in started
    assert expired >= 5, outcomes
    # The device's time went to calls somebody waited for: every start is before its deadline.
    assert all(at <= deadlines[tag] + SLACK for tag, at in started.items())
    for client in clients:
        client.close()
    service.assert_serving()


def test_a_request_queued_behind_a_capacity_lease_gives_up_at_its_deadline(
    make_service: Callable[..., RunningService], tmp_path: Path
) -> None:
    directory = tmp_path / "capacities"
    holder = Holder({"name": "dev", "limit": 1, "directory": directory, "acquire_timeout": 10.0},
                    "hold")
    try:
        holder.token()  # the one slot is taken
        service = make_service(concurrency=4)
        with service.client(timeout=0.5) as client:
            client.call("echo", 1)  # connected: ``timeout`` runs from the request's sending
            began = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="not executed") as caught:
                client.call("leased", str(directory), 0)
            waited = time.monotonic() - began
        assert caught.value.not_executed
        assert 0.3 < waited < 0.5 + 0.25, waited  # its deadline, not acquire_timeout (10 s)
        with service.client(timeout=30) as client:
            client.call("echo", 1)
            with appd.deadline(0.4):
                began = time.monotonic()
                with pytest.raises(DeadlineExceeded, match="capacity 'dev'"):
                    client.call("leased", str(directory), 0)
                assert time.monotonic() - began < 0.4 + 0.25
        service.assert_serving()
    finally:
        holder.close()


def test_handlers_see_the_time_left_and_the_request_id(service: RunningService) -> None:
    with service.client(timeout=5) as client:
        with appd.request_id("order-17"):
            left, rid = client.call("scope")
            assert rid == "order-17"
            assert 4.0 < left <= 5.0
            (_, request_rid), _ = client.send_request("request_scope")
            assert request_rid == "order-17"
        with appd.deadline(2.0), appd.deadline(10.0):  # nesting keeps the earliest
            left, rid = client.call("scope")
            assert 1.5 < left <= 2.0
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", rid)  # generated when none is in scope
        assert client.call("scope")[1] != rid  # a new one per call


def test_log_records_written_for_a_request_carry_its_id(service: RunningService) -> None:
    with service.client() as client, appd.request_id("req-4242"):
        client.call("log_request", "marker-for-the-id")

    def records() -> list[dict[str, object]] | None:
        found = [json.loads(line) for line in service.log.read_text().splitlines()
                 if "marker-for-the-id" in line]
        return found if len(found) == 2 else None

    found = wait_for(records, timeout=10, message="both records written")
    assert {record["request_id"] for record in found} == {"req-4242"}
    assert {record["event"] for record in found} == {
        "marker-for-the-id", "marker-for-the-id (stdlib)"}


def test_a_deadline_already_passed_is_not_sent(service: RunningService) -> None:
    with service.client() as client:
        before = client.call("hits")
        with appd.deadline(0), pytest.raises(DeadlineExceeded, match="before it was sent"):
            client.call("count")
        assert client.call("hits") == before


def test_a_deadline_far_away_is_no_deadline(service: RunningService) -> None:
    """A scope longer than a lock can wait (or infinite) must not break the wait for a client
    another thread is using."""
    with service.client() as client:
        for far in (1e300, float("inf")):
            busy = threading.Thread(target=client.call, args=("sleep", 0.3))
            busy.start()
            time.sleep(0.05)  # the other thread's call holds the client
            with appd.deadline(far):
                assert client.call("echo", 7) == 7
                left, _ = client.call("scope")
            busy.join(10)
            assert 25 < left <= 30  # the client's timeout governs


def test_a_timeout_says_the_call_may_have_run(service: RunningService) -> None:
    with service.client(timeout=0.3) as client, pytest.raises(
        RequestTimeout, match="may have run"
    ) as caught:
        client.call("sleep", 1.0)
    assert not caught.value.not_executed
    assert not isinstance(caught.value, DeadlineExceeded)


def test_a_deadline_a_handlers_own_call_ran_out_of_may_have_run(
    service: RunningService,
) -> None:
    """A ``DeadlineExceeded`` from a call the handler made to another service says nothing of
    what the handler did before it: its caller must not be told "not executed"."""
    with service.client() as client:
        before = client.call("hits")
        with pytest.raises(RequestTimeout, match="may have run") as caught:
            client.call("relay", service.port)
        assert not isinstance(caught.value, DeadlineExceeded)
        assert not caught.value.not_executed
        assert f"127.0.0.1:{service.port}" in str(caught.value)  # which call ran out
        assert client.call("hits") == before + 1  # it had acted


def test_the_asyncio_client_waits_for_its_lock_no_longer_than_the_deadline(
    service: RunningService, tmp_path: Path
) -> None:
    """Another task's call holds the client: a call in a shorter scope is not sent."""
    ledger = tmp_path / "ledger"

    async def main() -> tuple[object, float]:
        async with AsyncSecureSocketAppClient(
            "127.0.0.1", service.port, "alice", "alice-pw", "0123456789abcdef-test-key"
        ) as client:
            await client.call("echo", 0)
            holder = asyncio.create_task(client.call("device", str(ledger), "holder", 0.8))
            while "holder" not in read_ledger(ledger):
                await asyncio.sleep(0.01)
            began = time.monotonic()
            with appd.deadline(0.2):
                try:
                    outcome: object = await client.call("device", str(ledger), "late", 0)
                except RequestTimeout as exc:
                    outcome = exc
            waited = time.monotonic() - began
            assert await holder == "holder"
            return outcome, waited

    outcome, waited = asyncio.run(main())
    assert isinstance(outcome, DeadlineExceeded), outcome
    assert "before it was sent" in str(outcome)
    assert waited < 0.2 + 0.25, waited  # the scope's deadline, not the holder's 0.8 s
    assert set(read_ledger(ledger)) == {"holder"}


def test_a_queued_request_whose_client_left_does_not_run(
    make_service: Callable[..., RunningService], tmp_path: Path
) -> None:
    """A request without a deadline (an older client) whose connection closes while it waits
    for the one handler slot is dropped, not run."""
    service = make_service(concurrency=1, max_queue=8, queue_timeout=10.0)
    ledger = tmp_path / "ledger"
    with service.client(timeout=10) as holder:
        held = threading.Thread(target=holder.call, args=("device", str(ledger), "holder", 0.8))
        held.start()
        wait_for(lambda: "holder" in read_ledger(ledger), timeout=10, message="the slot held")
        raw = RawClient(service.raw_socket())
        raw.send(raw.session.seal_frame(encode_request(1, "device", [str(ledger), "gone", 0], {})))
        time.sleep(0.1)  # the request is read and waits for the slot
        raw.sock.close()
        held.join(timeout=10)
    time.sleep(0.5)
    assert set(read_ledger(ledger)) == {"holder"}
    service.assert_serving()


def test_a_request_without_deadline_or_id_is_served_as_before(service: RunningService) -> None:
    raw = RawClient(service.raw_socket())
    raw.send(raw.session.seal_frame(encode_request(7, "scope", [], {})))
    reply = decode_reply(raw.session.open(raw.read_frame()))
    assert reply.ok and reply.id == 7
    assert reply.args == [[None, None]]
    raw.sock.close()


def test_the_asyncio_client_carries_the_deadline(
    make_service: Callable[..., RunningService], tmp_path: Path
) -> None:
    service = make_service(concurrency=1, max_queue=8, queue_timeout=10.0)
    ledger = tmp_path / "ledger"

    async def main() -> list[object]:
        clients = [AsyncSecureSocketAppClient("127.0.0.1", service.port, "alice", "alice-pw",
                                              "0123456789abcdef-test-key", timeout=30)
                   for _ in range(4)]

        for client in clients:  # connected before the race starts
            await client.call("echo", 0)

        # A 1 s deadline: the service answers a call it could not start 50 ms before its
        # caller gives up (the client's reply margin), time enough under a loaded test run.
        async def one(i: int, client: AsyncSecureSocketAppClient) -> object:
            with appd.deadline(1.0):
                try:
                    return await client.call("device", str(ledger), f"a{i}", 1.2)
                except RequestTimeout as exc:
                    return exc

        try:
            return await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
        finally:
            for client in clients:
                await client.close()

    results = asyncio.run(main())
    # One call holds the device past everybody's deadline; the others never start.
    expired = [r for r in results if isinstance(r, DeadlineExceeded)]
    assert expired, results
    assert all(isinstance(r, RequestTimeout) for r in results)
    time.sleep(1.5)  # a queued call that ran anyway would have started by now
    started = read_ledger(ledger)
    assert len(started) <= len(results) - len(expired)
    assert len(started) <= 1  # 1.2 s each: a second would start past the 1 s deadlines
