"""The call scope: the deadline and the request id that travel with every call.

A web request has a budget (a gunicorn worker's 30 s, a client's patience); a service should not
spend a scarce resource on a call nobody waits for any more.  So a call's deadline and its
request id live in a context variable (thread- and asyncio-task-local):

* a client sends the time left (``timeout``, or the earlier of it and an enclosing
  :func:`deadline` scope) and the request id (the scope's :func:`request_id`, else a fresh one)
  with each request;
* a service runs each handler inside the request's scope, so :func:`time_remaining` tells the
  handler how long its caller still waits, calls it makes to other services carry the rest of the
  budget and the same id, capacity waits stop at the deadline, and every log record written for
  the request carries its ``request_id``.

Deadlines are absolute :func:`time.monotonic` times inside a process and *remaining seconds* on
the wire: the clocks of two hosts need not agree.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

__all__ = [
    "CallScope",
    "current_deadline",
    "current_request_id",
    "deadline",
    "reset_scope",
    "set_scope",
    "new_request_id",
    "request_id",
    "time_remaining",
]

#: Longest request id accepted from a caller or a header (longer ones are cut).
MAX_REQUEST_ID: Final = 128


#: The deadline (monotonic seconds, None: none) and request id (None: none) in force.  (A plain
#: tuple: a service sets one per request, and a named tuple costs several times as much.)
CallScope = tuple[float | None, str | None]

_NO_SCOPE: Final[CallScope] = (None, None)
_scope: ContextVar[CallScope] = ContextVar("appd_call_scope", default=_NO_SCOPE)
_get = _scope.get
#: Makes a scope current; returns the token that restores the previous one (``_scope.reset``).
set_scope = _scope.set
#: Restores the scope that was current before :data:`set_scope` returned ``token``.
reset_scope = _scope.reset


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Calls made inside the block must be answered within ``seconds`` from now.

    Nested scopes keep the earliest deadline (an inner scope cannot extend an outer one).  The
    client sends what is left with each request; a service does not start a request whose
    deadline has passed (:class:`~appd.errors.DeadlineExceeded`).  Yields the absolute deadline
    (:func:`time.monotonic` seconds).  Thread- and task-local (a context variable).
    """
    seconds = float(seconds)
    if seconds != seconds:  # NaN
        raise ValueError("a deadline needs a number of seconds, not NaN")
    current, rid = _get()
    at = time.monotonic() + max(0.0, seconds)
    if current is not None and current < at:
        at = current
    token = _scope.set((at, rid))
    try:
        yield at
    finally:
        _scope.reset(token)


@contextmanager
def request_id(value: str) -> Iterator[str]:
    """Calls made inside the block carry ``value`` as their request id (cut to
    :data:`MAX_REQUEST_ID` characters), as do the log records written inside it."""
    if not isinstance(value, str):
        raise TypeError(f"a request id is a str, not {type(value).__name__}")
    value = value[:MAX_REQUEST_ID]
    token = _scope.set((_get()[0], value))
    try:
        yield value
    finally:
        _scope.reset(token)


def time_remaining() -> float | None:
    """Seconds left before the current deadline (never negative), or None when no deadline is
    in force.  Inside a handler: how long the caller still waits for the reply."""
    at = _get()[0]
    if at is None:
        return None
    left = at - time.monotonic()
    return left if left > 0.0 else 0.0


def current_deadline() -> float | None:
    """The deadline in force, as a :func:`time.monotonic` time (None: none)."""
    return _get()[0]


def current_request_id() -> str | None:
    """The request id in force: inside a handler, the id its caller sent (None: none)."""
    return _get()[1]


#: The deadline and request id in force (what a client sends with a request).  (The context
#: variable's own method: every call a client makes reads it.)
current_scope: Callable[[], CallScope] = _get




_prefix = ""
_counter = itertools.count(1)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """A fresh request id: 12 random hex digits per process, a dash and a counter (unique
    without a random draw per call)."""
    return f"{_prefix}-{next(_counter):x}"
