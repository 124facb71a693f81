"""The handler-slot limiter with real threads: who waits, who is refused, and that a request
refused outright never costs a hand-off (``before_wait``)."""

from __future__ import annotations

import threading
import time

import pytest
from support import wait_for

from appd.errors import DeadlineExceeded, ServiceBusy
from appd.transport.limits import Limiter


def test_a_waiting_request_gets_the_slot_given_back() -> None:
    limiter = Limiter(1, max_queue=1, queue_timeout=10)
    assert limiter.acquire("a") is False
    handed_off: list[str] = []
    waited: list[bool] = []
    waiter = threading.Thread(
        target=lambda: waited.append(limiter.acquire("b", None, lambda: handed_off.append("b")))
    )
    waiter.start()
    assert wait_for(lambda: limiter.load().waiting == 1, timeout=10)
    limiter.release()
    waiter.join(10)
    assert waited == [True] and handed_off == ["b"]
    assert limiter.load().running == 1


def test_a_request_refused_outright_is_not_handed_off() -> None:
    limiter = Limiter(1, max_queue=0, queue_timeout=10)
    limiter.acquire("a")
    handed_off: list[str] = []
    with pytest.raises(ServiceBusy, match="queue is full"):
        limiter.acquire("full", None, lambda: handed_off.append("full"))
    limiter = Limiter(1, max_queue=8, queue_timeout=10)
    limiter.acquire("a")
    with pytest.raises(DeadlineExceeded, match="not executed"):
        limiter.acquire("late", time.monotonic() - 0.001, lambda: handed_off.append("late"))
    assert handed_off == []
    load = limiter.load()
    assert load.expired == {"late": 1} and load.waiting == 0 and load.running == 1


def test_a_queued_request_waits_no_longer_than_its_deadline() -> None:
    limiter = Limiter(1, max_queue=8, queue_timeout=10)
    limiter.acquire("a")
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        limiter.acquire("b", began + 0.2)
    assert 0.15 < time.monotonic() - began < 5
    assert limiter.load().expired == {"b": 1}
