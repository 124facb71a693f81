"""What a server hands its handler, and what the handler gives back.

One request type (:class:`Request`), one reply type (:data:`RequestReply`), one protocol for
"handles a request" (:class:`RequestHandler`: a callable), and one request counter
(:class:`RequestCounter`).  The server is given one handler and one counter; who builds them (a
service's request pipeline, with plugins' ``appd_request`` wrappers around its dispatch) is not
its business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LocalCounter", "Request", "RequestCounter", "RequestHandler", "RequestReply"]

#: A handler's answer: ``(res_args, res_kwargs)``.
RequestReply = tuple[list[Any], dict[str, Any]]


@dataclass(slots=True)
class Request:
    """One authenticated request, as handlers and plugins (``appd_request``) see it."""

    #: The client's request id (unique per connection).
    id: int
    #: The command name (``reqcmd``).
    cmd: str
    args: list[Any]
    kwargs: dict[str, Any]
    #: The username the connection authenticated as.
    username: str
    #: The client's address: ``host:port``, or ``unix`` for a Unix socket.
    peer: str
    #: When the caller stops waiting, as a :func:`time.monotonic` time of this process (the
    #: time left it sent, counted from the request's arrival); None: no deadline was sent.
    deadline: float | None = None
    #: The id the caller sent (its ``appd.request_id`` scope, or one it generated); None when
    #: an older client sent none.  Log records written while the request is handled carry it.
    request_id: str | None = None

    def time_remaining(self) -> float | None:
        """Seconds left before :attr:`deadline` (never negative); None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


class RequestHandler(Protocol):
    """Handles one request: called with it, returns ``(res_args, res_kwargs)`` or raises."""

    def __call__(self, request: Request, /) -> RequestReply: ...


class RequestCounter(Protocol):
    """Counts answered requests: the server calls :meth:`count` once per reply it sends."""

    def count(self) -> None:
        """One more request answered."""
        ...

    @property
    def value(self) -> int:
        """Requests answered so far."""
        ...


class LocalCounter:
    """A :class:`RequestCounter` in this process's memory (a supervised process uses its
    scoreboard slot instead, so the supervisor and ``appd status`` read the same number)."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = 0

    def count(self) -> None:
        self._value += 1

    @property
    def value(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"<LocalCounter {self._value}>"
