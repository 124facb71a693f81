"""The quit flag, the quit signal handlers and the quit-aware sleep."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from support import true_in_a_forked_child, wait_for

from appd import quit_requested, sleep
from appd.runtime.quit import clear_quit, request_quit
from appd.runtime.signals import (
    SignalQueue,
    install_quit_handlers,
    reset_signal_handlers,
    restore_handlers,
)


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


def test_a_queued_signal_ends_the_queues_wait_and_restore_puts_everything_back() -> None:
    """What lets the supervisor reap a process the moment it ends (SIGCHLD), not a tick later."""
    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    queue = SignalQueue()
    queue.install([signal.SIGUSR2])
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2))
    try:
        # One that came before the wait ends it at once...
        os.kill(os.getpid(), signal.SIGUSR2)
        started = time.monotonic()
        queue.wait(5.0)
        assert time.monotonic() - started < 1.0
        # ...one that comes during it, as it arrives (sent from another thread).
        timer.start()
        started = time.monotonic()
        queue.wait(5.0)
        assert 0.05 <= time.monotonic() - started < 1.0
        timer.join()
        assert queue.take() == [signal.SIGUSR2]
        # Without a signal it sleeps its whole timeout.
        started = time.monotonic()
        queue.wait(0.1)
        assert time.monotonic() - started >= 0.1
    finally:
        timer.cancel()
        timer.join()
        queue.restore()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    current = signal.set_wakeup_fd(before)
    assert current == before  # the wake-up descriptor was put back


def test_a_forked_child_forgets_its_parents_wake_up_descriptor() -> None:
    queue = SignalQueue()
    queue.install([signal.SIGUSR2])
    def forgotten() -> bool:
        reset_signal_handlers()
        return signal.set_wakeup_fd(-1) == -1

    try:
        assert true_in_a_forked_child(forgotten)
    finally:
        queue.restore()
