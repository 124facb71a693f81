"""The quit flag, the quit signal handlers and the quit-aware sleep."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from support import wait_for

from appd import quit_requested, sleep
from appd.runtime.quit import clear_quit, request_quit
from appd.runtime.signals import install_quit_handlers, restore_handlers


@pytest.fixture(autouse=True)
def fresh_flag() -> Iterator[None]:
    clear_quit()
    yield
    clear_quit()


@pytest.mark.parametrize("step_seconds", [1, 5, 0.001])
def test_sleep_never_oversleeps(step_seconds: float) -> None:
    started = time.monotonic()
    sleep(0.2, step_seconds=step_seconds)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.35


@pytest.mark.parametrize("step_seconds", [1, 60])
def test_sleep_returns_within_50_ms_of_a_quit_request(step_seconds: float) -> None:
    asked: list[float] = []

    def ask() -> None:
        time.sleep(0.1)
        asked.append(time.monotonic())
        request_quit()

    thread = threading.Thread(target=ask)
    thread.start()
    sleep(30, step_seconds=step_seconds)
    returned = time.monotonic()
    thread.join()
    assert quit_requested()
    assert returned - asked[0] < 0.05


def test_sleep_returns_at_once_once_quit_was_requested() -> None:
    request_quit()
    started = time.monotonic()
    sleep(10)
    assert time.monotonic() - started < 0.01


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_quit_signals_only_raise_the_flag(signum: signal.Signals) -> None:
    previous = install_quit_handlers()
    try:
        assert not quit_requested()
        os.kill(os.getpid(), signum)
        wait_for(quit_requested, message="the flag")
    finally:
        restore_handlers(previous)
    assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]
