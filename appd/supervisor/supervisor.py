"""The supervisor: runs every enabled service in processes of its own and keeps them running.

It is built on :mod:`appd.runtime` (fork, pid files, restart policy, signals) and adds what only
services need: listening sockets bound *before* the first fork (so ``processes = N`` share one
socket and "address in use" fails before anything starts), lifecycle hooks, a shared scoreboard of
readiness and request counts, a status file for ``appd status``, rolling restarts on SIGHUP and a
draining shutdown on SIGTERM/SIGINT.

The main loop follows the classic arbiter shape: signal handlers only set flags; the loop reaps
children without blocking, restarts the ones that are due, and writes status when it changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appd.config import AppdConfig, ServiceConfig
from appd.discovery import class_path
from appd.hooks import Hooks
from appd.logging import get_logger
from appd.runtime import quit_requested
from appd.runtime.process import ExitInfo, reap, spawn, stop_processes
from appd.runtime.restart import RestartTracker
from appd.runtime.signals import install_quit_handlers
from appd.service import AppServiceBase, SecureSocketAppService
from appd.supervisor.scoreboard import Scoreboard, SlotState

__all__ = ["ProcessState", "Supervisor", "status_path_for"]

_log = get_logger("appd.supervisor")

#: How often the main loop wakes up to reap, restart and report.
_TICK_SECONDS = 0.05
#: How often the status file is rewritten even when nothing changed (uptimes, request counts).
_STATUS_EVERY_SECONDS = 1.0


class ProcessState(StrEnum):
    """The life of one service process, as ``appd status`` reports it."""

    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FATAL = "fatal"


def status_path_for(pid_file: Path) -> Path:
    """Where the supervisor writes its status: beside its pid file, ``<stem>.status.json``."""
    return pid_file.with_name(pid_file.stem + ".status.json")


@dataclass
class _Worker:
    """One process slot of one service."""

    service: AppServiceBase
    config: ServiceConfig
    index: int
    slot: int
    tracker: RestartTracker
    pid: int | None = None
    state: ProcessState = ProcessState.STOPPED
    started_at: float | None = None
    restarts: int = 0
    restart_at: float | None = None
    exits: list[ExitInfo] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.service.name}[{self.index}]"


class Supervisor:
    """Runs services in supervised processes until asked to stop.

    :param config: the validated configuration.
    :param services: service instances, settings from the configuration already applied.
    :param hooks: the plugin facade the lifecycle hooks are fired through.
    :param status_file: where to write the status ``appd status`` reads (None: no file).
    """

    def __init__(
        self,
        config: AppdConfig,
        services: Sequence[AppServiceBase],
        hooks: Hooks,
        *,
        status_file: Path | None = None,
    ) -> None:
        self.config = config
        self.services = list(services)
        self.hooks = hooks
        self.status_file = status_file
        self.listeners: dict[str, socket.socket] = {}
        self.workers: list[_Worker] = []
        self._reload_requested = False
        self._started_at = time.time()
        self._last_status = 0.0
        self._status_dirty = True
        slots = sum(config.service(s.name).processes for s in self.services)
        self.scoreboard = Scoreboard(slots)
        slot = 0
        for service in self.services:
            service_config = config.service(service.name)
            for index in range(service_config.processes):
                tracker = RestartTracker(service_config.restart)
                self.workers.append(_Worker(service, service_config, index, slot, tracker))
                slot += 1

    # -- start-up ---------------------------------------------------------------------------

    def bind_all(self) -> None:
        """Bind every socket service's listening socket; on failure close those already bound.

        Each socket service's settings were validated once, when the configuration was applied
        (:meth:`~appd.SecureSocketAppService.configure`), so a bad value has already failed
        before any fork rather than in a crash-looping child.

        :raises AppdError: naming the service and the address (e.g. a port in use), or the
            setting that is wrong.
        """
        try:
            for service in self.services:
                bind: Callable[[], socket.socket] | None = getattr(service, "bind", None)
                if bind is not None:
                    self.listeners[service.name] = bind()
        except BaseException:
            self.close_listeners()
            raise

    def close_listeners(self) -> None:
        """Close the supervisor's copies of the listening sockets."""
        for listener in self.listeners.values():
            with contextlib.suppress(OSError):
                listener.close()
        self.listeners.clear()

    def run(self) -> int:
        """Bind, start every service process, supervise until quit; returns an exit code."""
        install_quit_handlers()
        signal.signal(signal.SIGHUP, self._on_sighup)
        self.bind_all()
        _log.info(
            "supervisor starting",
            services=[s.name for s in self.services],
            processes=len(self.workers),
        )
        try:
            for worker in self.workers:
                self._start(worker)
            while not quit_requested():
                self._tick()
                time.sleep(_TICK_SECONDS)
            self._shutdown("signal")
        finally:
            self.close_listeners()
            self.scoreboard.close()
            if self.status_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.status_file.unlink()
        return 0

    def _on_sighup(self, _signum: int, _frame: Any) -> None:
        self._reload_requested = True

    # -- one process ------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        service = worker.service
        self.hooks.appd_pre_fork(service=service, worker=worker.index)
        self.scoreboard.reset(worker.slot)
        listener = self.listeners.get(service.name)
        keep = [listener.fileno()] if listener is not None else []
        pid = spawn(
            lambda: _service_main(self, worker, listener),
            role=worker.label,
            keep_fds=keep,
        )
        worker.pid = pid
        worker.state = ProcessState.STARTING
        worker.started_at = time.time()
        worker.restart_at = None
        worker.tracker.started(time.monotonic())
        self._status_dirty = True
        _log.info("service process started", service=service.name, worker=worker.index, pid=pid)

    def _tick(self) -> None:
        now = time.monotonic()
        for info in reap():
            worker = self._worker_by_pid(info.pid)
            if worker is not None:
                self._on_exit(worker, info, now)
        for worker in self.workers:
            if worker.state is ProcessState.STARTING:
                state, _ = self.scoreboard.read(worker.slot)
                if state is SlotState.READY:
                    worker.state = ProcessState.READY
                    self._status_dirty = True
                    _log.info(
                        "service process ready",
                        service=worker.service.name,
                        worker=worker.index,
                        pid=worker.pid,
                    )
            elif (
                worker.state is ProcessState.BACKOFF
                and worker.restart_at is not None
                and now >= worker.restart_at
            ):
                worker.restarts += 1
                self._start(worker)
        if self._reload_requested:
            self._reload_requested = False
            self._rolling_restart()
        if self._status_dirty or time.monotonic() - self._last_status >= _STATUS_EVERY_SECONDS:
            self.write_status()

    def _worker_by_pid(self, pid: int) -> _Worker | None:
        return next((w for w in self.workers if w.pid == pid), None)

    def _on_exit(self, worker: _Worker, info: ExitInfo, now: float) -> None:
        worker.pid = None
        self._status_dirty = True
        clean = info.exitcode == 0
        if worker.state is ProcessState.STOPPING or (clean and quit_requested()):
            worker.state = ProcessState.STOPPED
            return
        delay = None if clean else worker.tracker.exited(now)
        will_restart = delay is not None
        log = _log.info if clean else _log.warning
        log(
            "service process exited",
            service=worker.service.name,
            worker=worker.index,
            pid=info.pid,
            exitcode=info.exitcode,
            signal=info.signal,
            restarts=worker.restarts,
            will_restart=will_restart,
            restart_in=delay,
        )
        if not clean:
            self.hooks.appd_crash(
                service=worker.service,
                worker=worker.index,
                exitcode=info.exitcode,
                signal=info.signal,
                restarts=worker.restarts,
                will_restart=will_restart,
            )
        if clean:
            worker.state = ProcessState.STOPPED
        elif delay is None:
            worker.state = ProcessState.FATAL
            _log.error(
                "service process gave up: too many restarts",
                service=worker.service.name,
                worker=worker.index,
                restarts=worker.restarts,
                max_restarts=worker.config.restart.max_restarts,
                window=worker.config.restart.window,
            )
        else:
            worker.state = ProcessState.BACKOFF
            worker.restart_at = now + delay

    # -- SIGHUP: one process at a time ------------------------------------------------------

    def _rolling_restart(self) -> None:
        _log.info("rolling restart requested")
        for worker in self.workers:
            if quit_requested():
                return
            if worker.pid is None or worker.state not in (
                ProcessState.READY,
                ProcessState.STARTING,
            ):
                continue
            self._stop_one(worker)
            self._start(worker)
            deadline = time.monotonic() + max(10.0, worker.config.restart.healthy_after)
            while time.monotonic() < deadline and not quit_requested():
                self._tick()
                if worker.state is not ProcessState.STARTING:
                    break
                time.sleep(_TICK_SECONDS)
        _log.info("rolling restart finished")

    def _stop_one(self, worker: _Worker) -> None:
        if worker.pid is None:
            return
        worker.state = ProcessState.STOPPING
        self._status_dirty = True
        pid = worker.pid
        stop_processes([pid], grace=self._grace_for(worker))
        worker.pid = None
        worker.state = ProcessState.STOPPED

    def _grace_for(self, worker: _Worker) -> float:
        grace = worker.config.stop_grace
        return self.config.shutdown_grace if grace is None else grace

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self, reason: str) -> None:
        _log.info("supervisor stopping", reason=reason)
        self.close_listeners()
        running = [w for w in self.workers if w.pid is not None]
        for worker in running:
            worker.state = ProcessState.STOPPING
        self.write_status()
        grace = max((self._grace_for(w) for w in running), default=0.0)
        stop_processes([w.pid for w in running if w.pid is not None], grace=grace)
        for worker in running:
            worker.pid = None
            worker.state = ProcessState.STOPPED
        self.hooks.appd_quit(reason=reason)
        _log.info("supervisor stopped", reason=reason)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``appd status --json`` prints: the supervisor and every service process."""
        now = time.time()
        services: dict[str, Any] = {}
        for worker in self.workers:
            entry = services.setdefault(
                worker.service.name,
                {"class": class_path(type(worker.service)), "processes": []},
            )
            _, requests = self.scoreboard.read(worker.slot)
            entry["processes"].append(
                {
                    "worker": worker.index,
                    "state": worker.state.value,
                    "pid": worker.pid,
                    "restarts": worker.restarts,
                    "uptime": (
                        round(now - worker.started_at, 3)
                        if worker.pid is not None and worker.started_at is not None
                        else None
                    ),
                    "requests": requests,
                }
            )
        for entry in services.values():
            states = {p["state"] for p in entry["processes"]}
            entry["state"] = _overall_state(states)
            entry["restarts"] = sum(p["restarts"] for p in entry["processes"])
            entry["requests"] = sum(p["requests"] for p in entry["processes"])
        return {
            "state": "stopping" if quit_requested() else "running",
            "pid": os.getpid(),
            "started_at": self._started_at,
            "uptime": round(now - self._started_at, 3),
            "services": services,
        }

    def write_status(self) -> None:
        """Atomically rewrite the status file, if there is one."""
        self._status_dirty = False
        self._last_status = time.monotonic()
        if self.status_file is not None:
            write_json_atomically(self.status_file, self.status())


def _overall_state(states: set[str]) -> str:
    for state in ("fatal", "backoff", "starting", "stopping", "ready"):
        if state in states:
            return state
    return "stopped"


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _service_main(
    supervisor: Supervisor, worker: _Worker, listener: socket.socket | None
) -> None:
    """What a service process runs, from just after fork until it exits."""
    service = worker.service
    hooks = supervisor.hooks
    board = supervisor.scoreboard
    _set_process_title(f"appd: {worker.label}")
    board.set_state(worker.slot, SlotState.STARTING)
    hooks.appd_post_fork(service=service, worker=worker.index)
    service.setup()
    try:
        board.set_state(worker.slot, SlotState.READY)
        hooks.appd_service_ready(service=service, worker=worker.index)
        serve: Callable[..., None] | None = getattr(service, "serve", None)
        if isinstance(service, SecureSocketAppService) and listener is not None:
            service.serve(listener, hooks=hooks, counter=board.counter(worker.slot))
        elif serve is not None and listener is not None:
            serve(listener)  # a service of its own kind that serves a listener itself
        else:
            service.run()
    finally:
        board.set_state(worker.slot, SlotState.STOPPING)
        try:
            service.teardown()
        finally:
            if quit_requested():
                hooks.appd_quit(reason="signal")


def _set_process_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
