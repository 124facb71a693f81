"""The appd plugin: hook implementations that speak to systemd from the supervisor.

All of it runs in the supervisor, which systemd started as the unit's main process.  Service
processes do nothing: :meth:`SystemdPlugin.appd_post_fork` removes systemd's variables from their
environment, and their notifications would be refused anyway (``NotifyAccess=main``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from appd import (
    AppServiceBase,
    ConfigurationError,
    discover_services,
    get_logger,
    hookimpl,
    load_hooks,
)
from appd_systemd.activation import LISTEN_ENV, PassedSocket, find_socket, passed_sockets
from appd_systemd.notify import NOTIFY_SOCKET_ENV, Notifier
from appd_systemd.unit import render_unit
from appd_systemd.watchdog import WATCHDOG_ENV, silent_processes, watchdog_interval

__all__ = ["SETTINGS_TABLE", "SYSTEMD_ENV", "SystemdPlugin", "SystemdSettings", "plugin", "summary"]

#: The configuration table this plugin reads (and takes out of the settings).
SETTINGS_TABLE: Final = "systemd"

#: Every variable systemd sets for the unit's main process only.
SYSTEMD_ENV: Final = (NOTIFY_SOCKET_ENV, *WATCHDOG_ENV, *LISTEN_ENV)

#: How long the supervisor's status may go unwritten before the watchdog stops (it is written at
#: least once a second while the supervisor's loop runs).
_STATUS_STALE_AFTER: Final = 2.0

#: The least ``max_heartbeat_age`` by default.  A live process shows life about twice a second
#: and the status comes about once a second, so between two status writes a live process can
#: look up to about 1.5 s old; below two ping intervals for any ``WatchdogSec`` of 2 s or more.
MIN_HEARTBEAT_AGE: Final = 1.75

_log = get_logger("appd.systemd")


@dataclass(frozen=True)
class SystemdSettings:
    """The ``[systemd]`` table.

    :ivar watchdog_sec: ``WatchdogSec=`` of the unit ``appd systemd-unit`` prints (0: none).
    :ivar max_heartbeat_age: seconds a ready service process may go without showing life
        before the watchdog pings stop (``None``: the ping interval, half of ``WatchdogSec``,
        but at least :data:`MIN_HEARTBEAT_AGE`).
    """

    watchdog_sec: float = 30.0
    max_heartbeat_age: float | None = None

    @classmethod
    def from_table(cls, table: Any, *, where: str = SETTINGS_TABLE) -> SystemdSettings:
        """Validate the table; :class:`appd.ConfigurationError` names a wrong key."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{where}: expected a table of settings")
        unknown = sorted(set(table) - {"watchdog_sec", "max_heartbeat_age"})
        if unknown:
            raise ConfigurationError(
                f"{where}.{unknown[0]}: unknown setting (known: max_heartbeat_age, watchdog_sec)"
            )
        watchdog_sec = _number(table, "watchdog_sec", cls.watchdog_sec, where, minimum=0.0)
        age = None
        if table.get("max_heartbeat_age") is not None:
            age = _number(table, "max_heartbeat_age", 0, where)
        return cls(watchdog_sec=watchdog_sec, max_heartbeat_age=age)


def _number(
    table: Mapping[str, Any], key: str, default: float, where: str, *, minimum: float = 0.001
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigurationError(
            f"{where}.{key}: expected a number of seconds >= {minimum:g}, not {value!r}"
        )
    return float(value)


def summary(status: Mapping[str, Any]) -> str:
    """The one-line ``STATUS=``: services ready, starting (for the first time), restarting
    (after a crash), FATAL."""
    services: Mapping[str, Any] = status.get("services", {})
    ready = sorted(n for n, s in services.items() if s.get("state") == "ready")
    restarting = sorted(
        n
        for n, s in services.items()
        if s.get("state") == "backoff" or (s.get("state") == "starting" and s.get("restarts"))
    )
    starting = sorted(
        n
        for n, s in services.items()
        if s.get("state") == "starting" and not s.get("restarts")
    )
    fatal = sorted(n for n, s in services.items() if s.get("state") == "fatal")
    parts = [f"{len(ready)}/{len(services)} services ready"]
    if starting:
        parts.append("starting: " + ", ".join(starting))
    if restarting:
        parts.append("restarting: " + ", ".join(restarting))
    if fatal:
        parts.append("FATAL: " + ", ".join(fatal))
    state = status.get("state")
    if state in ("reloading", "stopping"):
        parts.insert(0, str(state))
    return "; ".join(parts)


def all_ready(status: Mapping[str, Any]) -> bool:
    """True when the supervisor runs and every service it runs is ready."""
    services: Mapping[str, Any] = status.get("services", {})
    return (
        status.get("state") == "running"
        and bool(services)
        and all(s.get("state") == "ready" for s in services.values())
    )


class SystemdPlugin:
    """Readiness, status, reload and stop notifications, the aggregate watchdog, socket
    activation, and the ``appd systemd-unit`` command.  One instance is the entry point."""

    def __init__(self) -> None:
        self.settings = SystemdSettings()
        #: Why the ``[systemd]`` table was refused (``appd systemd-unit`` reports it).
        self.config_error: ConfigurationError | None = None
        #: ``None`` until a hook tells which process this is: ``supervisor`` or ``service``.
        self.role: str | None = None
        self.notifier: Notifier | None = None
        #: Seconds between watchdog pings (``None``: no watchdog).
        self.interval: float | None = None
        self._passed: list[PassedSocket] = []
        #: Service name -> the passed socket it serves on.
        self._assigned: dict[str, PassedSocket] = {}
        self._activation_error: str | None = None
        self._lock = threading.Lock()
        self._status: tuple[Mapping[str, Any], float] | None = None
        self._ready_sent = False
        self._reloading = False
        self._reload_seen_in_status = False
        self._stopping_sent = False
        self._status_line: str | None = None
        self._pinger: threading.Thread | None = None
        self._stop = threading.Event()
        self._silent: list[str] = []

    # -- which process is this ---------------------------------------------------------------

    def _in_supervisor(self) -> bool:
        """On the first supervisor hook: read systemd's variables, then remove them from the
        environment so that no process appd starts inherits them."""
        if self.role == "service":
            return False
        if self.role is None:
            self.role = "supervisor"
            self._read_environment(os.environ, os.getpid())
            for name in SYSTEMD_ENV:
                os.environ.pop(name, None)
        return True

    def _read_environment(self, environ: Mapping[str, str], pid: int) -> None:
        self.notifier = Notifier.from_environ(environ)
        if self.notifier is not None:
            try:
                self.interval = watchdog_interval(environ, pid)
            except ValueError as exc:
                _log.warning("systemd watchdog off", error=str(exc))
        try:
            self._passed = passed_sockets(environ, pid)
        except ValueError as exc:
            self._activation_error = str(exc)
            _log.error("socket activation failed", error=str(exc))
        if self.notifier is None and not self._passed:
            return  # not started by systemd: nothing to do
        _log.info(
            "systemd integration",
            notify=self.notifier is not None,
            watchdog_interval=self.interval,
            passed_sockets=[p.name or str(p.sock.getsockname()) for p in self._passed],
        )

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def appd_configure(self, config: MutableMapping[str, Any]) -> None:
        """Take the ``[systemd]`` table out of the settings and validate it."""
        table = config.pop(SETTINGS_TABLE, None)
        if table is not None:
            try:
                self.settings = SystemdSettings.from_table(table)
            except ConfigurationError as exc:
                self.config_error = exc
                raise

    @hookimpl
    def appd_listener(self, service: AppServiceBase) -> Any:
        """Hand a passed socket to the service it is named for, or bound to; a single unnamed
        socket that matches no address goes to the first socket service (one socket, one
        service: ``systemd-socket-activate -l PORT appd run``).

        The service gets a duplicate: the supervisor closes its listener when the service has
        no process left or is removed, and may ask again later; the passed socket itself stays
        open here for that (as systemd keeps its own copy open).
        """
        if not self._in_supervisor():
            return None
        if self._activation_error is not None:
            raise ConfigurationError(f"socket activation: {self._activation_error}")
        chosen = self._assigned.get(service.name)
        if chosen is None:
            chosen = self._choose(service)
            if chosen is None:
                return None
            self._assigned[service.name] = chosen
            _log.info(
                "serving on a passed socket",
                service=service.name,
                address=str(chosen.sock.getsockname()),
            )
        return chosen.sock.dup()

    def _choose(self, service: AppServiceBase) -> PassedSocket | None:
        free = [p for p in self._passed if all(p is not a for a in self._assigned.values())]
        # The validated settings when the service has them, else its attributes.
        where = getattr(service, "settings", None) or service
        sock = find_socket(
            free,
            service.name,
            host=getattr(where, "host", None),
            port=getattr(where, "port", None),
            path=getattr(where, "path", None),
        )
        found = next((p for p in free if p.sock is sock), None)
        if found is None and len(self._passed) == len(free) == 1 and not free[0].name:
            found = free[0]
        return found

    @hookimpl
    def appd_pre_fork(self) -> None:
        """Make sure systemd's variables are out of the environment before the first fork."""
        self._in_supervisor()

    @hookimpl
    def appd_post_fork(self) -> None:
        """In a service process: forget the supervisor's state; drop systemd's variables."""
        self.role = "service"
        # Sockets copied by a fork had their descriptors closed for this process: detach them,
        # so that dropping them never closes a descriptor number reused since.
        if self.notifier is not None:
            self.notifier.detach()
        for passed in self._passed:
            passed.sock.detach()
        self.notifier = None
        self.interval = None
        self._passed = []
        self._assigned = {}
        self._pinger = None
        for name in SYSTEMD_ENV:
            os.environ.pop(name, None)

    @hookimpl
    def appd_status(self, status: Mapping[str, Any]) -> None:
        """Notify readiness, status and stopping from the supervisor's status document."""
        if not self._in_supervisor() or self.notifier is None:
            return
        with self._lock:
            self._status = (status, time.monotonic())
            self._on_status(status)
        if self.interval is not None and self._pinger is None:
            self._pinger = threading.Thread(
                target=self._ping_loop, name="appd-systemd-watchdog", daemon=True
            )
            self._pinger.start()

    @hookimpl
    def appd_reload(self, phase: str) -> None:
        """``RELOADING=1`` when a reload begins; ``READY=1`` again once it has ended and every
        service is ready."""
        if not self._in_supervisor() or self.notifier is None:
            return
        with self._lock:
            if phase == "begin":
                self._reload_seen_in_status = False
                self._begin_reload()
            elif phase == "end":
                self._reloading = False
                self._reload_seen_in_status = False
                if self._status is not None:
                    # The last status was written during the reload: it still says so.
                    self._on_status({**self._status[0], "state": "running"})

    @hookimpl
    def appd_quit(self) -> None:
        """``STOPPING=1`` (if the status did not say so first); the watchdog stops."""
        if self.role != "supervisor":
            return
        self._stop.set()
        if self.notifier is not None:
            with self._lock:
                self._send_stopping()

    @hookimpl
    def appd_add_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        """``appd systemd-unit``: print a unit file for the current configuration."""
        parser = subparsers.add_parser(
            "systemd-unit",
            help="Print a systemd unit (Type=notify) that runs this configuration.",
            description="Print a systemd unit (Type=notify) that runs this configuration.",
        )
        parser.add_argument("--user", help="the user the services run as (User=)")
        parser.add_argument(
            "--watchdog-sec", type=float, default=None,
            help="WatchdogSec= (default: [systemd] watchdog_sec, else 30; 0 turns it off)",
        )
        parser.set_defaults(handler=self.print_unit)

    # -- notifications (called with the lock held) --------------------------------------------

    def _on_status(self, status: Mapping[str, Any]) -> None:
        assert self.notifier is not None
        state = status.get("state")
        if state == "stopping":
            self._send_stopping()
            return
        if state == "reloading" and not self._reloading:
            self._reload_seen_in_status = True
            self._begin_reload()
        elif state == "running" and self._reloading and self._reload_seen_in_status:
            # A reload this plugin learnt of from the status alone ends with the status.
            self._reloading = False
            self._reload_seen_in_status = False
        line = summary(status)
        assignments = []
        if not self._ready_sent and not self._reloading and all_ready(status):
            self._ready_sent = True
            assignments.append("READY=1")
            _log.info("systemd notified: ready", status=line)
        if line != self._status_line or assignments:
            self._status_line = line
            assignments.append(f"STATUS={line}")
            self.notifier.send(*assignments)

    def _begin_reload(self) -> None:
        assert self.notifier is not None
        self._reloading = True
        self._ready_sent = False
        self._status_line = "reloading"
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")
        _log.info("systemd notified: reloading")

    def _send_stopping(self) -> None:
        assert self.notifier is not None
        if self._stopping_sent:
            return
        self._stopping_sent = True
        self._stop.set()
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        _log.info("systemd notified: stopping")

    # -- the watchdog ------------------------------------------------------------------------

    @property
    def max_heartbeat_age(self) -> float:
        """Seconds of silence after which a ready service process stops the pings."""
        if self.settings.max_heartbeat_age is not None:
            return self.settings.max_heartbeat_age
        return max(self.interval or 0.0, MIN_HEARTBEAT_AGE)

    def healthy(self, now: float | None = None) -> bool:
        """Whether to ping now: the supervisor wrote its status recently and every ready
        service process has shown life within ``max_heartbeat_age`` seconds."""
        with self._lock:
            current = self._status
        if current is None or self.interval is None:
            return False
        status, received = current
        since = (time.monotonic() if now is None else now) - received
        if since > max(self.interval, _STATUS_STALE_AFTER):
            silent = ["the supervisor"]
        else:
            limit = self.max_heartbeat_age
            silent = silent_processes(status, max_heartbeat_age=limit, since_status=since)
        if silent != self._silent:
            if silent:
                _log.warning("watchdog pings withheld: no sign of life", processes=silent)
            else:
                _log.info("watchdog pings resumed")
            self._silent = silent
        return not silent

    def _ping_loop(self) -> None:
        assert self.interval is not None and self.notifier is not None
        while not self._stop.is_set():
            if self.healthy():
                self.notifier.send("WATCHDOG=1")
            self._stop.wait(self.interval)

    # -- appd systemd-unit ---------------------------------------------------------------------

    def print_unit(self, args: argparse.Namespace) -> int:
        """Print the unit for the configuration ``appd`` would run (``--config`` honoured)."""
        from appd.config import find_config_file, finish_config, read_config

        hooks = load_hooks()
        self.config_error = None
        config = finish_config(
            read_config(args.config),
            configure=lambda data: hooks.appd_configure(config=data),
            disabled_plugins={*hooks.pm.disabled, *hooks.pm.disabled_entry_points},
            secrets=False,  # a unit names no secret: it can be written where they are not set
        )
        if self.config_error is not None:
            raise self.config_error
        found = find_config_file(args.config)
        config_file = found[0].resolve() if found is not None else None
        graces = [config.shutdown_grace] + [
            s.stop_grace for s in config.services.values() if s.stop_grace is not None
        ]
        writable = {config.run_dir, config.pid_file.parent, config.log_file.parent}
        for service in config.services.values():
            path = service.settings.get("path")
            if isinstance(path, str) and path:
                writable.add((config.run_dir / path).resolve().parent)
        watchdog = self.settings.watchdog_sec
        if args.watchdog_sec is not None:
            watchdog = args.watchdog_sec
        if watchdog < 0:
            raise ConfigurationError("--watchdog-sec must not be negative")
        script = Path(sys.executable).with_name("appd")
        exec_start = [str(script), "run"]
        if not script.exists():
            exec_start = [sys.executable, "-m", "appd", "run"]
        discovered = discover_services(
            hooks=hooks, modules=config.modules, directories=[str(p) for p in config.paths]
        )
        wanted = set(config.enabled) if config.enabled is not None else None
        names = sorted(
            d.name
            for d in discovered
            if config.service(d.name).enabled and (wanted is None or d.name in wanted)
        )
        sys.stdout.write(
            render_unit(
                services=names,
                exec_start=exec_start,
                working_directory=config.run_dir,
                config_file=config_file,
                watchdog_sec=watchdog,
                stop_timeout=max(graces) + 10,
                writable_paths=sorted(writable),
                user=args.user,
            )
        )
        return 0


#: The instance registered through the ``appd.plugins`` entry point ``systemd``.
plugin: Final = SystemdPlugin()
