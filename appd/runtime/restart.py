"""When to restart a process that died, and when to stop trying.

One policy serves the daemon's guardian, :func:`~appd.runtime.workers.start_workers` and the
service supervisor.  :class:`RestartTracker` holds no processes and reads no clock of its own:
it is fed "started at t" and "exited at t" and answers with the next delay, so it is tested
without processes or sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["RestartPolicy", "RestartTracker", "as_seconds"]


def as_seconds(value: timedelta | float | int, *, name: str = "interval") -> float:
    """Seconds from a ``timedelta`` or a number; a negative value is a ``ValueError``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {seconds!r} seconds")
    return seconds


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervised process is restarted after it exits abnormally.

    The first restart waits ``interval``; each restart in a row multiplies the wait by
    ``backoff``, up to ``max_interval``.  A run that lasted ``healthy_after`` seconds counts as
    healthy and puts the wait back to ``interval``.  When ``max_restarts`` restarts already
    happened within the last ``window`` seconds, the next crash gives up instead.

    Every value is in seconds.
    """

    #: The wait before the first restart after a healthy run.
    interval: float = 1.0
    #: The cap on the wait, however many restarts in a row.
    max_interval: float = 60.0
    #: The factor between one wait and the next while crashes continue.
    backoff: float = 2.0
    #: A run at least this long resets the wait to ``interval``.
    healthy_after: float = 30.0
    #: How many restarts ``window`` may hold before the next crash gives up.
    max_restarts: int = 5
    #: The sliding window, in seconds, over which restarts are counted.
    window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("interval", "max_interval", "healthy_after", "window"):
            if getattr(self, name) < 0:
                raise ValueError(f"RestartPolicy.{name} must not be negative")
        if self.backoff < 1:
            raise ValueError("RestartPolicy.backoff must be at least 1")
        if self.max_restarts < 0:
            raise ValueError("RestartPolicy.max_restarts must not be negative")
        if self.max_interval < self.interval:
            raise ValueError("RestartPolicy.max_interval must not be below interval")

    @classmethod
    def from_interval(cls, interval: timedelta | float | int) -> RestartPolicy:
        """The default policy with its first wait set to ``interval`` (a cap below it is raised)."""
        seconds = as_seconds(interval, name="restart_interval")
        return cls(interval=seconds, max_interval=max(cls.max_interval, seconds))

    @classmethod
    def coerce(cls, value: RestartPolicy | timedelta | float | int) -> RestartPolicy:
        """A policy as given, or the default policy starting at the given interval."""
        return value if isinstance(value, RestartPolicy) else cls.from_interval(value)


@dataclass
class RestartTracker:
    """The restart state of one supervised process, driven by its start and exit times.

    Times are any monotonic clock in seconds (``time.monotonic()`` in practice).
    """

    policy: RestartPolicy
    #: How many restarts were granted so far, over the whole life of the tracker.
    restarts: int = 0
    #: Why the last :meth:`exited` gave up; None while restarts are still granted.
    gave_up_because: str | None = None
    _delay: float = field(default=-1.0, repr=False)
    _started_at: float | None = field(default=None, repr=False)
    _recent: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self._delay = self.policy.interval

    def started(self, at: float) -> None:
        """The process (re)started at time ``at``."""
        self._started_at = at

    def exited(self, at: float) -> float | None:
        """The process exited abnormally at ``at``: the delay before restarting it, or None to
        give up (the reason is then in :attr:`gave_up_because`)."""
        policy = self.policy
        if self._started_at is not None and at - self._started_at >= policy.healthy_after:
            self._delay = policy.interval
        self._started_at = None
        while self._recent and self._recent[0] <= at - policy.window:
            self._recent.popleft()
        if len(self._recent) >= policy.max_restarts:
            self.gave_up_because = (
                f"{len(self._recent)} restarts within {policy.window:g} s "
                f"(max_restarts={policy.max_restarts})"
            )
            return None
        delay = self._delay
        self._recent.append(at)
        self.restarts += 1
        self._delay = min(self._delay * policy.backoff, policy.max_interval)
        return delay
