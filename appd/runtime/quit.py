"""The per-process "quit was asked" flag, and a sleep that ends as soon as it is raised.

Signal handlers only raise the flag; everything else polls it.  A plain boolean is the one thing
a signal handler may safely touch: a lock-based primitive could deadlock if the signal arrived
while the main thread held its lock.
"""

from __future__ import annotations

import time

__all__ = ["QUIT_POLL_SECONDS", "clear_quit", "quit_requested", "request_quit", "sleep"]

#: How often :func:`sleep` looks at the flag; bounds how late it notices a quit request.
QUIT_POLL_SECONDS = 0.02

_quit = False


def quit_requested() -> bool:
    """True once this process (guardian, executor, worker or service) has been asked to quit."""
    return _quit


def request_quit() -> None:
    """Raise the quit flag of this process; safe to call from a signal handler."""
    global _quit
    _quit = True


def clear_quit() -> None:
    """Lower the flag: a freshly forked child starts with its own, un-raised flag."""
    global _quit
    _quit = False


def sleep(seconds: float, step_seconds: float = 1) -> None:
    """Sleep ``seconds``, returning early (within about 20 ms) once quit is requested.

    Never sleeps longer than asked.  ``step_seconds`` is accepted for code written against the
    seed's API; the flag is checked far more often than that whatever its value.
    """
    deadline = time.monotonic() + max(0.0, float(seconds))
    step = min(QUIT_POLL_SECONDS, step_seconds) if step_seconds > 0 else QUIT_POLL_SECONDS
    while not _quit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(step, remaining))
