"""What the supervisor serves: the service processes' merged files, its own status, and the
capacities as their backends report them.

From the files: ``appd_requests_total``, ``appd_request_duration_seconds``,
``appd_busy_rejections_total``, ``appd_requests_in_flight`` and ``appd_request_queue_depth``
(gauges only of processes alive now).  From the supervisor's status document (the one
``appd status --json`` prints): restarts, states and heartbeat ages of processes and services.
From each configured capacity, asked at scrape time: its limit, holders and waiters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from appd_prometheus.slots import dead_ids

__all__ = ["PROCESS_STATES", "AppdCollector", "CapacityReading"]

#: Every state a service process (and a service) can be in, as ``appd status`` names them.
PROCESS_STATES: Final = ("starting", "ready", "backoff", "stopping", "stopped", "fatal")


@dataclass(frozen=True)
class CapacityReading:
    """One capacity as its backend reported it (``holders``/``waiters`` ``None``: unreachable)."""

    name: str
    limit: int
    holders: int | None
    waiters: int | None


class AppdCollector(Collector):
    """Collects every metric at scrape time.

    :param directory: where service processes write their metrics files.
    :param status: returns the supervisor's latest status document (``None``: none yet).
    :param capacities: reads every configured capacity now.
    """

    def __init__(
        self,
        directory: Path,
        status: Callable[[], Mapping[str, Any] | None],
        capacities: Callable[[], Sequence[CapacityReading]] = tuple,
    ) -> None:
        self.directory = directory
        self.status = status
        self.capacities = capacities

    def collect(self) -> Iterator[Metric]:
        """The merged process metrics, then the supervisor's own."""
        status = self.status()
        files = sorted(str(p) for p in self.directory.glob("*.db"))
        if status is not None:
            stale = dead_ids(self.directory, _live_pids(status))
            files = [f for f in files if not _is_stale_gauge(f, stale)]
        yield from MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        if status is not None:
            yield from _status_metrics(status)
        yield from _capacity_metrics(self.capacities())


def _live_pids(status: Mapping[str, Any]) -> set[int]:
    return {
        process["pid"]
        for service in status.get("services", {}).values()
        for process in service.get("processes", ())
        if process.get("pid")
    }


def _is_stale_gauge(path: str, stale: set[str]) -> bool:
    name = Path(path).name
    if not name.startswith("gauge_live"):
        return False
    return name.split("_", 2)[2].removesuffix(".db") in stale


def _status_metrics(status: Mapping[str, Any]) -> Iterator[Metric]:
    restarts = CounterMetricFamily(
        "appd_process_restarts",
        "Times the supervisor restarted each process slot.",
        labels=["service", "worker"],
    )
    process_state = GaugeMetricFamily(
        "appd_process_state",
        "1 for the state each process slot is in, 0 for the others.",
        labels=["service", "worker", "state"],
    )
    heartbeat = GaugeMetricFamily(
        "appd_process_heartbeat_age_seconds",
        "Seconds since each running service process last showed life.",
        labels=["service", "worker"],
    )
    service_state = GaugeMetricFamily(
        "appd_service_state",
        "1 for the state each service is in, 0 for the others.",
        labels=["service", "state"],
    )
    for name, service in sorted(status.get("services", {}).items()):
        for state in PROCESS_STATES:
            service_state.add_metric([name, state], 1.0 if service.get("state") == state else 0.0)
        for process in service.get("processes", ()):
            worker = str(process.get("worker"))
            restarts.add_metric([name, worker], float(process.get("restarts", 0)))
            for state in PROCESS_STATES:
                current = 1.0 if process.get("state") == state else 0.0
                process_state.add_metric([name, worker, state], current)
            age = process.get("heartbeat_age")
            if age is not None and process.get("pid"):
                heartbeat.add_metric([name, worker], float(age))
    up = GaugeMetricFamily(
        "appd_supervisor_up", "1 while the supervisor runs; its state is a label.",
        labels=["state"],
    )
    up.add_metric([str(status.get("state", "running"))], 1.0)
    yield from (restarts, process_state, heartbeat, service_state, up)


def _capacity_metrics(readings: Sequence[CapacityReading]) -> Iterator[Metric]:
    if not readings:
        return
    families = {
        "limit": GaugeMetricFamily(
            "appd_capacity_limit", "Holders each capacity allows at once.", labels=["capacity"]
        ),
        "holders": GaugeMetricFamily(
            "appd_capacity_holders", "Leases each capacity has granted now, on every host.",
            labels=["capacity"],
        ),
        "waiters": GaugeMetricFamily(
            "appd_capacity_waiters", "Acquirers waiting for each capacity now.",
            labels=["capacity"],
        ),
        "up": GaugeMetricFamily(
            "appd_capacity_up", "1 when each capacity's backend answered, 0 when it did not.",
            labels=["capacity"],
        ),
    }
    for reading in readings:
        families["limit"].add_metric([reading.name], float(reading.limit))
        families["up"].add_metric([reading.name], 0.0 if reading.holders is None else 1.0)
        if reading.holders is not None:
            families["holders"].add_metric([reading.name], float(reading.holders))
        if reading.waiters is not None:
            families["waiters"].add_metric([reading.name], float(reading.waiters))
    yield from families.values()
