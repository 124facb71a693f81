"""Signal handling: SIGTERM and SIGINT only raise the quit flag; everything else polls it.

A handler that did real work (stop children, remove files, log) could run in the middle of any
bytecode of the main loop, including one that holds a lock the handler needs.  Raising a flag is
always safe, so that is all appd's handlers do.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from appd.runtime.quit import request_quit

__all__ = [
    "QUIT_SIGNALS",
    "SignalQueue",
    "blocked_quit_signals",
    "install_quit_handlers",
    "reset_signal_handlers",
    "restore_handlers",
    "unblock_quit_signals",
]

#: The signals that ask a process to quit.
QUIT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

#: Signals whose disposition a forked child puts back to the default before it runs anything.
_RESET_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
    signal.SIGALRM,
    signal.SIGPIPE,
)

Handler = Any  # what signal.signal returns: a callable, SIG_DFL, SIG_IGN or None


def _on_quit_signal(signum: int, frame: FrameType | None) -> None:
    request_quit()


def install_quit_handlers() -> dict[signal.Signals, Handler]:
    """Make SIGTERM and SIGINT raise this process's quit flag (main thread only).

    :returns: the handlers that were in place, for :func:`restore_handlers`.
    """
    return {signum: signal.signal(signum, _on_quit_signal) for signum in QUIT_SIGNALS}


def restore_handlers(previous: Mapping[signal.Signals, Handler]) -> None:
    """Put back handlers returned by :func:`install_quit_handlers`."""
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def reset_signal_handlers() -> None:
    """Give a freshly forked child default dispositions (Python's own SIGPIPE choice aside).

    The caller's handlers belong to the caller's code; a child must not run them.  SIGPIPE stays
    ignored as Python sets it at start-up, so a closed pipe is an ``OSError``, not a death.  The
    parent's wake-up descriptor (:meth:`SignalQueue.wait`) is forgotten too: the child closes
    its copy, and its number may soon name another file of the child's.
    """
    signal.set_wakeup_fd(-1)
    for signum in _RESET_SIGNALS:
        if signum == signal.SIGPIPE:
            signal.signal(signum, signal.SIG_IGN)
        elif signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        else:
            signal.signal(signum, signal.SIG_DFL)


@contextmanager
def blocked_quit_signals() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back (they stay pending) while a fork is in progress.

    Without it a signal arriving between ``fork()`` and the child's own handler set-up would
    run the parent's handler in the child, or be lost there.  The child unblocks them itself
    once its handlers are ready; the parent's pending signals are delivered on exit.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, QUIT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_quit_signals() -> None:
    """Let SIGTERM and SIGINT through again: a forked child calls it once its handlers are set."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIT_SIGNALS)


class SignalQueue:
    """Signals recorded by their handlers, handled later by the owner's loop.

    A handler only appends the signal number (and raises the quit flag for SIGTERM/SIGINT, so
    :func:`~appd.runtime.quit.sleep` and code polling :func:`~appd.runtime.quit_requested` see
    it at once); the loop calls :meth:`take` once per tick and handles each signal once, at a
    point where handling it is safe.  Appending to a list is atomic and takes no lock.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._previous: dict[int, Handler] = {}
        #: Written to (by the interpreter) when a signal arrives: what :meth:`wait` waits on.
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._poll = select.poll()
        self._previous_wakeup = -1

    def install(self, signals: Iterable[int]) -> None:
        """Route ``signals`` into the queue, and let them end a :meth:`wait` (main thread
        only)."""
        if self._wake is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._previous_wakeup = signal.set_wakeup_fd(
                writer.fileno(), warn_on_full_buffer=False
            )
            self._wake = reader, writer
            self._poll.register(reader, select.POLLIN)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._record)

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, less when one of the queue's signals arrives (from
        the moment :meth:`install` returned: one that came before the call ends it at once)."""
        if self._wake is None:
            time.sleep(timeout)
            return
        if self._poll.poll(timeout * 1000.0):
            with contextlib.suppress(OSError):
                while self._wake[0].recv(512):
                    pass

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if signum in QUIT_SIGNALS:
            request_quit()
        self._pending.append(signum)

    def take(self) -> list[int]:
        """The signals received since the last call, each number once, in order of arrival."""
        taken, self._pending = self._pending, []
        return list(dict.fromkeys(taken))

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced (and the wake-up descriptor)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        if self._wake is not None:
            reader, writer = self._wake
            with contextlib.suppress(ValueError, OSError):
                current = signal.set_wakeup_fd(self._previous_wakeup)
                if current != writer.fileno():  # someone set another since: theirs stays
                    signal.set_wakeup_fd(current)
            self._poll.unregister(reader)
            reader.close()
            writer.close()
            self._wake = None
