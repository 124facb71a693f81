"""The appd plugin: per-request metrics in service processes, the endpoint in the supervisor.

In the supervisor (from the first fork on): the metrics directory is made (and emptied), its
path is put in the environment the service processes inherit, and an HTTP endpoint serves
``/metrics`` on ``[prometheus] host:port`` until appd stops, when the directory is cleaned.  In
each service process (from ``appd_post_fork``): the process claims its slot's files and records
every request through an ``appd_request`` wrapper, and its load a few times a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Generator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from appd import (
    AppdError,
    AppServiceBase,
    ConfigurationError,
    DeadlineExceeded,
    RequestTimeout,
    UnknownCommand,
    get_logger,
    hookimpl,
)
from appd_prometheus.settings import SETTINGS_TABLE, PrometheusSettings
from appd_prometheus.slots import Slot, claim_slot

if TYPE_CHECKING:  # prometheus_client is imported only where metrics are configured
    from wsgiref.simple_server import WSGIServer

    from appd_prometheus.collector import CapacityReading
    from appd_prometheus.metrics import LoadSampler, ServiceMetrics

__all__ = ["DIRECTORY_ENV", "SAMPLE_INTERVAL", "UNKNOWN_COMMAND", "PrometheusPlugin", "plugin"]

#: The ``command`` label of requests for a command the service does not have.
UNKNOWN_COMMAND: Final = "<unknown>"

#: Set by the supervisor for its service processes: where they write their metrics.
DIRECTORY_ENV: Final = "APPD_PROMETHEUS_DIR"

#: Seconds between two samples of a service process's load.
SAMPLE_INTERVAL: Final = 0.25

_log = get_logger("appd.prometheus")


class PrometheusPlugin:
    """Metrics across every service process, served by the supervisor.  One instance is the
    entry point; it does nothing unless the configuration has a ``[prometheus]`` table."""

    def __init__(self) -> None:
        #: The ``[prometheus]`` settings (``None``: no table, the plugin stays idle).
        self.settings: PrometheusSettings | None = None
        #: ``None`` until a hook tells which process this is: ``supervisor`` or ``service``.
        self.role: str | None = None
        self.directory: Path | None = None
        self._own_directory = False
        self._httpd: WSGIServer | None = None
        self._status: Mapping[str, Any] | None = None
        #: The services' configured capacities (``service.capacities``), read at scrape time.
        self._capacities: Any = None
        self.metrics: ServiceMetrics | None = None
        self._sampler: LoadSampler | None = None
        self._slot: Slot | None = None
        self._timeout: float | None = None

    # -- configuration -----------------------------------------------------------------------

    @hookimpl
    def appd_configure(self, config: MutableMapping[str, Any]) -> None:
        """Take the ``[prometheus]`` table out of the settings and validate it."""
        table = config.pop(SETTINGS_TABLE, None)
        if table is not None:
            self.settings = PrometheusSettings.from_table(table)

    @hookimpl
    def appd_addresses(self) -> list[tuple[str, str]]:
        """The endpoint's address, for ``appd check``'s conflicts and free-address checks."""
        if self.settings is None:
            return []
        return [("prometheus endpoint", f"{self.settings.host}:{self.settings.port}")]

    # -- the supervisor ----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the endpoint listens (``None``: it does not)."""
        if self._httpd is None:
            return None
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def _in_supervisor(self) -> bool:
        """On the first supervisor hook: make the directory and start the endpoint."""
        if self.role == "service":
            return False
        if self.role is None:
            self.role = "supervisor"
            if self.settings is not None:
                self._start_supervisor(self.settings)
        return self.settings is not None

    def _start_supervisor(self, settings: PrometheusSettings) -> None:
        if settings.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="appd-prometheus-"))
            self._own_directory = True
        else:
            self.directory = settings.directory.resolve()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._empty_directory()
        os.environ[DIRECTORY_ENV] = str(self.directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.directory)
        from prometheus_client import CollectorRegistry, start_http_server

        from appd_prometheus.collector import AppdCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            AppdCollector(self.directory, lambda: self._status, self.read_capacities)
        )
        try:
            self._httpd, _ = start_http_server(settings.port, addr=settings.host, registry=registry)
        except OSError as exc:
            self._clean_up()
            for name in (DIRECTORY_ENV, "PROMETHEUS_MULTIPROC_DIR"):
                os.environ.pop(name, None)  # service processes then record nothing
            raise ConfigurationError(
                f"prometheus: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        host, port = self.address or ("", 0)
        _log.info(
            "metrics endpoint listening", address=f"{host}:{port}", directory=str(self.directory)
        )

    def _empty_directory(self) -> None:
        assert self.directory is not None
        for pattern in ("*.db", "*.lock"):
            for path in self.directory.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def read_capacities(self) -> list[CapacityReading]:
        """Every configured capacity as its backend reports it now.

        Read through capacities of its own, opened for the scrape and closed after it (as
        ``appd status`` does), never through the services' own: a service process forked from
        the supervisor must not inherit a backend the supervisor opened.
        """
        from appd_prometheus.collector import CapacityReading

        configured = self._capacities
        if configured is None or not configured.configs:
            return []
        capacities = type(configured)(configured.configs)
        readings = []
        try:
            for name, config in sorted(capacities.configs.items()):
                try:
                    status = capacities.get(name).status()
                except AppdError as exc:
                    _log.warning("capacity unavailable for metrics", capacity=name, error=str(exc))
                    readings.append(CapacityReading(name, config.limit, None, None))
                    continue
                holders = len(status.holders)
                readings.append(CapacityReading(name, status.limit, holders, status.waiters))
        finally:
            capacities.close()
        return readings

    def _remember_capacities(self, service: AppServiceBase) -> None:
        capacities = getattr(service, "capacities", None)
        if capacities is not None and capacities is not self._capacities:
            self._capacities = capacities

    @hookimpl
    def appd_listener(self, service: AppServiceBase) -> None:
        """Start the endpoint before the first fork (a port in use fails the start)."""
        if self._in_supervisor():
            self._remember_capacities(service)

    @hookimpl
    def appd_pre_fork(self, service: AppServiceBase) -> None:
        """Start the endpoint before the first fork (if no socket service did already)."""
        if self._in_supervisor():
            self._remember_capacities(service)

    @hookimpl
    def appd_status(self, status: Mapping[str, Any]) -> None:
        """Keep the supervisor's latest status for the next scrape."""
        if self._in_supervisor():
            self._status = status

    # -- a service process -------------------------------------------------------------------

    @hookimpl
    def appd_post_fork(self, service: AppServiceBase, worker: int) -> None:
        """Claim this slot's metrics files; forget the supervisor's endpoint."""
        self.role = "service"
        if self._httpd is not None:
            # The supervisor's endpoint, copied by a fork: its thread did not survive, and its
            # descriptor was closed for this process; detach so nothing closes it twice.
            self._httpd.socket.detach()
            self._httpd = None
        self._status = None
        self._capacities = None
        directory = os.environ.get(DIRECTORY_ENV)
        if not directory:
            return
        self.directory = Path(directory)
        from appd_prometheus.metrics import ServiceMetrics

        self._slot = claim_slot(self.directory, service.name, worker)
        self.metrics = ServiceMetrics(service.name, self._slot.id, self.directory)
        # The validated settings when the service has them, else its attribute.
        settings = getattr(service, "settings", None)
        timeout = getattr(getattr(settings, "server", service), "request_timeout", None)
        self._timeout = float(timeout) if isinstance(timeout, int | float) else None

    @hookimpl
    def appd_service_ready(self, service: AppServiceBase) -> None:
        """Sample the service's load (handlers running, queued, refused busy) from now on."""
        if self.metrics is None or self._sampler is not None:
            return
        load = getattr(service, "server_load", None)
        if load is None:
            return
        from appd_prometheus.metrics import LoadSampler

        self._sampler = LoadSampler(self.metrics, load, SAMPLE_INTERVAL)
        self._sampler.start()

    def wants_requests(self, service: object) -> bool:
        """Asked as a service process builds its request pipeline (after ``appd_post_fork``):
        without a ``[prometheus]`` table there is nothing to record, so the ``appd_request``
        wrapper stays out of it (and costs the requests nothing)."""
        return self.metrics is not None

    @hookimpl(wrapper=True)
    def appd_request(self, request: Any) -> Generator[None, Any, Any]:
        """Count the request by outcome and time its handler."""
        metrics = self.metrics
        if metrics is None:
            return (yield)
        started = time.perf_counter()
        try:
            result = yield
        except DeadlineExceeded as exc:
            if exc.unstarted:
                raise  # not run (a capacity wait cut short): counted as expired by the sampler
            metrics.observe(request.cmd, "timeout", time.perf_counter() - started)
            raise  # a call the handler made ran out of time: answered as a timeout
        except RequestTimeout:
            metrics.observe(request.cmd, "timeout", time.perf_counter() - started)
            raise
        except UnknownCommand:
            # Any client may name any command: one series for them all, not one per name.
            metrics.observe(UNKNOWN_COMMAND, "remote_error", time.perf_counter() - started)
            raise
        except BaseException:
            elapsed = time.perf_counter() - started
            metrics.observe(request.cmd, self._outcome(elapsed, "remote_error"), elapsed)
            raise
        elapsed = time.perf_counter() - started
        metrics.observe(request.cmd, self._outcome(elapsed, "ok"), elapsed)
        return result

    def _outcome(self, elapsed: float, otherwise: str) -> str:
        """A handler that ran past ``request_timeout`` had its client answered with a timeout."""
        if self._timeout is not None and elapsed > self._timeout:
            return "timeout"
        return otherwise

    # -- the end -----------------------------------------------------------------------------

    @hookimpl
    def appd_quit(self) -> None:
        """Service process: a last sample.  Supervisor: stop the endpoint, clean the files."""
        if self.role == "service":
            if self._sampler is not None:
                self._sampler.stop()
                self._sampler = None
            return
        if self.role != "supervisor":
            return
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
            _log.info("metrics endpoint stopped")
        self._clean_up()

    def _clean_up(self) -> None:
        """Remove the service processes' files (and the directory, when it is our own)."""
        if self.directory is None:
            return
        for name in (DIRECTORY_ENV, "PROMETHEUS_MULTIPROC_DIR"):  # set for our services only
            if os.environ.get(name) == str(self.directory):
                del os.environ[name]
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            self._empty_directory()
        self.directory = None


#: The instance registered through the ``appd.plugins`` entry point ``prometheus``.
plugin: Final = PrometheusPlugin()
