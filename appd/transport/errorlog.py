"""How a server logs its handlers' failures without letting a client flood its log.

* An :class:`~appd.errors.AppdError` a handler raises is an answer the service chose (a bad
  outlet number, an unknown command): one ``handler raised`` line with its message, no
  traceback.
* Any other exception is a bug or an outage: its traceback is logged, but at most
  :data:`TRACEBACKS_LOGGED` per service and exception type every :data:`ERROR_LOG_INTERVAL`
  seconds; the rest are counted and reported as one ``handler failures not logged`` summary line
  per interval (as failed authentications are).
* Strings a client controls (command names, usernames, error messages that quote them) are
  clipped to :data:`CLIENT_TEXT_LIMIT` characters in records.
"""

from __future__ import annotations

import threading

from appd.errors import AppdError
from appd.logging import get_logger

__all__ = ["CLIENT_TEXT_LIMIT", "ERROR_LOG_INTERVAL", "HandlerErrorLog", "TRACEBACKS_LOGGED",
           "clip"]

log = get_logger("appd.transport")

#: Characters of a client-controlled string kept in a record.
CLIENT_TEXT_LIMIT = 200
#: Seconds of one rate-limiting window for unexpected handler exceptions.
ERROR_LOG_INTERVAL = 10.0
#: Tracebacks logged per exception type per window; the rest are counted.
TRACEBACKS_LOGGED = 5


def clip(text: str, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class HandlerErrorLog:
    """One server's log of failed handlers (shared by its connection threads)."""

    def __init__(self, service: str, interval: float = ERROR_LOG_INTERVAL) -> None:
        self.service = service
        self.interval = interval
        self._lock = threading.Lock()
        #: Tracebacks still allowed in this window, by exception type.
        self._left: dict[str, int] = {}
        #: Failures not logged in this window, by exception type.
        self._suppressed: dict[str, int] = {}
        self._window_end = 0.0

    def failed(self, cmd: str, peer: str, exc: BaseException, now: float) -> None:
        """Log (or count) one handler failure."""
        error_type = type(exc).__name__
        if isinstance(exc, AppdError):
            log.warning(
                "handler raised", service=self.service, cmd=clip(cmd), peer=peer,
                error_type=error_type, error=clip(str(exc)),
            )
            return
        with self._lock:
            self._roll(now)
            left = self._left.get(error_type, TRACEBACKS_LOGGED)
            if left <= 0:
                self._suppressed[error_type] = self._suppressed.get(error_type, 0) + 1
                return
            self._left[error_type] = left - 1
        log.warning(
            "handler raised", service=self.service, cmd=clip(cmd), peer=peer,
            error_type=error_type, exc_info=exc,
        )

    def flush(self, now: float, *, force: bool = False) -> None:
        """Log the summary of the window that ended (when it ended, or ``force``)."""
        with self._lock:
            if force:
                self._window_end = 0.0
            self._roll(now)

    def _roll(self, now: float) -> None:
        """Start a new window when the current one is over, summarising what it suppressed."""
        if now < self._window_end:
            return
        if self._suppressed:
            suppressed, self._suppressed = self._suppressed, {}
            log.warning(
                "handler failures not logged", service=self.service,
                suppressed=sum(suppressed.values()), by_type=suppressed,
                interval=self.interval,
            )
        self._left = {}
        self._window_end = now + self.interval
