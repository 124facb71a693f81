"""The metrics a service process records: requests by outcome, latency, load, busy refusals
and requests whose deadline passed before they started.

Values live in prometheus-client's multiprocess files under this process's slot id
(:mod:`appd_prometheus.slots`); the supervisor reads and merges them.  A request costs one
counter increment and one histogram observation; the load (handlers running, requests queued,
refusals) is sampled from the service a few times a second by :class:`LoadSampler`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from prometheus_client import Counter, Gauge, Histogram, values

__all__ = ["BUCKETS", "OUTCOMES", "LoadSampler", "ServiceLoad", "ServiceMetrics"]

#: The ``outcome`` label of ``appd_requests_total``.
OUTCOMES: Final = ("ok", "remote_error", "busy", "timeout", "expired")

#: Latency buckets (seconds): appd answers in tens of microseconds; handlers take what they take.
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
)


class ServiceLoad(Protocol):
    """What :meth:`appd.SecureSocketAppService.server_load` returns."""

    running: int
    waiting: int
    refused: Mapping[str, int]
    #: Requests not run because their deadline passed (appd >= the deadline release; absent
    #: from older ones).
    expired: Mapping[str, int]


class ServiceMetrics:
    """One service process's metrics, written under slot id ``slot_id`` in ``directory``.

    :param service: the service's name (the ``service`` label).
    """

    def __init__(self, service: str, slot_id: str, directory: Path) -> None:
        self.service = service
        # prometheus-client reads the directory from the environment when a value is made, and
        # names files after the process identifier: the slot's id, not the pid.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        values.ValueClass = values.MultiProcessValue(lambda: slot_id)  # type: ignore[no-untyped-call]
        self.directory = directory
        self.requests = Counter(
            "appd_requests", "Requests by service, command and outcome.",
            ["service", "command", "outcome"], registry=None,
        )
        self.duration = Histogram(
            "appd_request_duration_seconds",
            "Time from the handler's start to its reply, by service and command.",
            ["service", "command"], buckets=BUCKETS, registry=None,
        )
        self.busy = Counter(
            "appd_busy_rejections", "Requests refused with ServiceBusy, by service and command.",
            ["service", "command"], registry=None,
        )
        self.expired = Counter(
            "appd_deadline_expired",
            "Requests not run because their caller's deadline passed first, by service and "
            "command.",
            ["service", "command"], registry=None,
        )
        self.in_flight = Gauge(
            "appd_requests_in_flight", "Handlers running now, by service.",
            ["service"], multiprocess_mode="livesum", registry=None,
        ).labels(service)
        self.queue_depth = Gauge(
            "appd_request_queue_depth", "Requests waiting for a handler slot now, by service.",
            ["service"], multiprocess_mode="livesum", registry=None,
        ).labels(service)
        self.in_flight.set(0)
        self.queue_depth.set(0)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._refused_seen: dict[str, int] = {}
        self._expired_seen: dict[str, int] = {}

    def observe(self, command: str, outcome: str, seconds: float) -> None:
        """Count one request that reached its handler, and its duration."""
        children = self._children.get((command, outcome))
        if children is None:
            children = (
                self.requests.labels(self.service, command, outcome),
                self.duration.labels(self.service, command),
            )
            self._children[(command, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def sample(self, load: ServiceLoad | None) -> None:
        """Record the service's load: gauges now, refusals since the last sample."""
        if load is None:
            return
        self.in_flight.set(load.running)
        self.queue_depth.set(load.waiting)
        for command, total in load.refused.items():
            new = total - self._refused_seen.get(command, 0)
            if new > 0:
                self.requests.labels(self.service, command, "busy").inc(new)
                self.busy.labels(self.service, command).inc(new)
                self._refused_seen[command] = total
        for command, total in getattr(load, "expired", {}).items():
            new = total - self._expired_seen.get(command, 0)
            if new > 0:
                self.requests.labels(self.service, command, "expired").inc(new)
                self.expired.labels(self.service, command).inc(new)
                self._expired_seen[command] = total


class LoadSampler:
    """Samples ``load()`` into ``metrics`` every ``interval`` seconds in a daemon thread."""

    def __init__(
        self, metrics: ServiceMetrics, load: Callable[[], ServiceLoad | None], interval: float
    ) -> None:
        self.metrics = metrics
        self.load = load
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="appd-prometheus", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.interval + 1)
        self.metrics.sample(self.load())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.metrics.sample(self.load())
