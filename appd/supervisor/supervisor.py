"""The supervisor: runs every enabled service in processes of its own and keeps them running.

It runs services on the runtime's engine (:mod:`appd.runtime.engine`: one slot per process,
restart policy, stop deadlines) and adds what only services need: listening sockets bound
*before* the first process starts (so ``processes = N`` share one socket and "address in use"
fails before anything starts), lifecycle hooks, a shared scoreboard (readiness, requests,
heartbeats, connections), the status document, reloads and a draining shutdown.

The loop: signal handlers only enqueue, and wake the loop (SIGCHLD too, so a process that ended
is reaped at once rather than up to a tick later); each tick handles the queued signals once,
lets the engine reap, restart and stop (stopping is a state with a deadline, never a wait),
moves the reload in progress one step on, and writes the status when it changed or a second has
passed.

A reload (SIGHUP) first loads the configuration, the plugins and discovery again, then replaces
each service's processes one at a time: the new process starts on the shared listening socket,
and once it is ready the old one is told to drain and stop (``reload = "stop-first"``: the old
one stops first).  A SIGHUP during a reload queues exactly one more reload, which starts when
the current one ends; reloads never nest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from appd.config import AppdConfig, ServiceConfig
from appd.discovery import class_path
from appd.errors import AppdError
from appd.hooks import Hooks
from appd.logging import get_logger
from appd.runtime.engine import Engine, Event, Slot, SlotState, write_json_atomically
from appd.runtime.logfile import reopen_log_file
from appd.runtime.process import INHERIT, spawn, spawn_exec
from appd.runtime.signals import SignalQueue
from appd.service import AppServiceBase, SecureSocketAppService
from appd.service.base import RELOAD_MODES
from appd.supervisor.child import ProcessBoard, configure_process_logging, serve_process
from appd.supervisor.scoreboard import Scoreboard
from appd.supervisor.scoreboard import SlotState as BoardState

__all__ = [
    "RELOAD_MODES",
    "ChildSpec",
    "Plan",
    "ProcessState",
    "Supervisor",
    "read_status",
    "status_path_for",
    "write_json_atomically",
]

_log = get_logger("appd.supervisor")

#: The states of a service process, as ``appd status`` reports them.
ProcessState = SlotState

#: How often the main loop wakes up to reap, restart and report (a signal wakes it sooner).
_TICK_SECONDS = 0.05
#: Seconds a service process without a socket must have run before it counts as ready.
RUN_READY_AFTER: Final = 0.5
#: How often the status is rewritten even when nothing changed (uptimes, heartbeats).
_STATUS_EVERY_SECONDS = 1.0


def status_path_for(pid_file: Path) -> Path:
    """Where the supervisor writes its status: beside its pid file, ``<stem>.status.json``."""
    return pid_file.with_name(pid_file.stem + ".status.json")


def read_status(path: Path) -> dict[str, Any]:
    """The status document at ``path`` (schema in docs/cli.md); ``{}`` when there is none
    or it cannot be read.  The one reader of the status file."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class ChildSpec:
    """What a service process started by ``exec`` needs to know about its place."""

    service: str
    worker: int
    slot: int
    group: int
    scoreboard_fd: int
    listener_fd: int | None


@dataclass(frozen=True)
class Plan:
    """The configuration, plugins and services a (re)load produced."""

    config: AppdConfig
    hooks: Hooks
    services: Sequence[AppServiceBase]


#: Builds the command line that starts one service process with fresh code.
ChildCommand = Callable[[ChildSpec], list[str]]


def reload_mode(service: AppServiceBase) -> str:
    """The service's ``reload`` setting (checked when its settings were applied)."""
    mode = str(getattr(service, "reload", "overlap")).lower()
    return mode if mode in RELOAD_MODES else "overlap"


@dataclass(eq=False)
class _Proc:
    """The supervisor's record of one process slot."""

    service: _Service
    worker: int
    board_slot: int | None = None
    #: Start the next process by ``exec`` (fresh code: a reload); else fork the supervisor.
    fresh: bool = False


@dataclass(eq=False)
class _Service:
    """One service as the supervisor runs it."""

    service: AppServiceBase
    config: ServiceConfig
    group: int
    listener: socket.socket | None = None
    #: The listener came from ``appd_listener`` (socket activation): never shut it down, since
    #: the service manager that passed it keeps listening on it.
    given: bool = False
    #: The current slot of each worker index.
    workers: list[Slot] = field(default_factory=list)
    #: Replaced slots still draining.
    draining: list[Slot] = field(default_factory=list)
    #: Requests answered by each worker's processes that have ended.
    requests_done: list[int] = field(default_factory=list)
    removed: bool = False

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def socket_service(self) -> bool:
        return hasattr(self.service, "bind")


@dataclass(eq=False)
class _Step:
    """The replacement of one worker during a reload."""

    service: _Service
    worker: int
    old: Slot | None
    new: Slot | None = None


class Supervisor:
    """Runs services in supervised processes until asked to stop.

    :param config: the validated configuration.
    :param services: service instances, settings from the configuration already applied.
    :param hooks: the plugin facade the lifecycle hooks are fired through.
    :param status_file: where to write the status ``appd status`` reads (None: no file).
    :param child_command: builds the command that starts a service process with fresh code
        (``exec``), used for the processes a reload starts; the first processes and restarts
        after a crash are forks of the supervisor (quick; the code the supervisor loaded at
        start or at the last reload).  None: always fork.
    :param reload: loads the configuration, plugins and services again on SIGHUP; None
        keeps the ones given.
    """

    def __init__(
        self,
        config: AppdConfig,
        services: Sequence[AppServiceBase],
        hooks: Hooks,
        *,
        status_file: Path | None = None,
        child_command: ChildCommand | None = None,
        reload: Callable[[], Plan] | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.status_file = status_file
        self.child_command = child_command
        self.reload_plan = reload
        self.engine = Engine()
        self.scoreboard = Scoreboard.create()
        self.signals = SignalQueue()
        self.services: dict[str, _Service] = {}
        self._groups: dict[str, int] = {}
        self._started_at = time.time()
        self._state = "starting"
        self._last_status = 0.0
        self._status_dirty = True
        self._reloads = 0
        self._reload_failures = 0
        self._last_reload_error: str | None = None
        #: When the last reload that did not load failed (seconds since the epoch), or None.
        self._last_reload_failed_at: float | None = None
        self._reload_steps: dict[str, _Step] = {}
        self._reload_queue: dict[str, deque[int]] = {}
        self._reloading = False
        self._reload_again = False
        for service in services:
            self._add_service(service)

    # -- services and their processes -------------------------------------------------------

    def _add_service(self, service: AppServiceBase, *, fresh: bool = False) -> _Service:
        group = self._groups.setdefault(service.name, len(self._groups) + 1)
        entry = _Service(service, self.config.service(service.name), group)
        reload_mode(service)
        self.services[service.name] = entry
        for index in range(entry.config.processes):
            entry.workers.append(self._new_slot(entry, index, fresh=fresh))
            entry.requests_done.append(0)
        return entry

    def _new_slot(
        self, entry: _Service, worker: int, *, like: Slot | None = None, fresh: bool = False
    ) -> Slot:
        proc = _Proc(entry, worker, fresh=fresh)
        slot = Slot(
            name=f"{entry.name}[{worker}]",
            launch=lambda: self._launch(proc),
            policy=entry.config.restart,
            grace=self._grace_for(entry.config),
            data=proc,
        )
        slot.ready = lambda: self._is_ready(proc, slot)
        if like is not None and like.state is not SlotState.FATAL:
            slot.tracker = like.tracker
            slot.restarts = like.restarts
        return self.engine.add(slot)

    def _grace_for(self, config: ServiceConfig) -> float:
        return self.config.shutdown_grace if config.stop_grace is None else config.stop_grace

    def _is_ready(self, proc: _Proc, slot: Slot) -> bool:
        """A socket service's process is ready once it accepts; one that only ``run()``s once
        it has run for :data:`RUN_READY_AFTER` seconds (one that fails at once is not)."""
        if proc.board_slot is None:
            return False
        if self.scoreboard.read(proc.board_slot).state is not BoardState.READY:
            return False
        if proc.service.socket_service or slot.started_at is None:
            return True
        return time.time() - slot.started_at >= RUN_READY_AFTER

    def _launch(self, proc: _Proc) -> int:
        entry = proc.service
        if entry.socket_service and entry.listener is None:
            self._open_listener(entry)
        if not (proc.fresh and self.child_command is not None):  # a fork: derive the keys first
            _derive_keys(entry.service)
        self.hooks.appd_pre_fork(service=entry.service, worker=proc.worker)
        if proc.board_slot is not None:
            self.scoreboard.release(proc.board_slot)
        proc.board_slot = self.scoreboard.allocate(entry.group)
        listener = entry.listener
        keep = [self.scoreboard.fd]
        if listener is not None:
            keep.append(listener.fileno())
        if proc.fresh and self.child_command is not None:
            proc.fresh = False  # a restart after a crash forks: no interpreter start-up
            spec = ChildSpec(
                service=entry.name,
                worker=proc.worker,
                slot=proc.board_slot,
                group=entry.group,
                scoreboard_fd=self.scoreboard.fd,
                listener_fd=None if listener is None else listener.fileno(),
            )
            pid = spawn_exec(self.child_command(spec), keep_fds=keep)
        else:
            board = ProcessBoard(self.scoreboard, proc.board_slot, entry.group)
            hooks, service, worker = self.hooks, entry.service, proc.worker
            config = self.config

            def body() -> None:
                configure_process_logging(config, entry.name, worker)
                serve_process(service, hooks, worker=worker, board=board, listener=listener)

            pid = spawn(
                body,
                role=f"{entry.name}[{proc.worker}]",
                stdout_filename=INHERIT,
                stderr_filename=INHERIT,
                keep_fds=keep,
            )
        _log.info("service process started", service=entry.name, worker=proc.worker, pid=pid)
        return pid

    # -- listening sockets ------------------------------------------------------------------

    def bind_all(self) -> None:
        """Bind every socket service's listening socket; on failure close those already bound.

        Each socket service's settings were validated once, when the configuration was applied
        (:meth:`~appd.SecureSocketAppService.configure`), so a bad value has already failed
        before any process starts rather than in a crash-looping child.

        :raises AppdError: naming the service and the address (e.g. a port in use), or the
            setting that is wrong.
        """
        try:
            for entry in self.services.values():
                self._open_listener(entry)
        except BaseException:
            self.close_listeners()
            raise

    def _open_listener(self, entry: _Service) -> None:
        service = entry.service
        bind: Callable[[], socket.socket] | None = getattr(service, "bind", None)
        if bind is None or entry.listener is not None:
            return
        given = self.hooks.appd_listener(service=service)
        entry.listener = given if given is not None else bind()
        entry.given = given is not None
        self._status_dirty = True

    def _close_listener(self, entry: _Service, *, refuse: bool = False) -> None:
        """Close the supervisor's copy of the service's listener.  With ``refuse`` the socket
        itself stops listening first, for every process holding a copy: connections waiting in
        its queue and new ones are refused at once (a shutdown, a removed service) -- unless a
        plugin gave the socket (socket activation): its service manager keeps listening."""
        if entry.listener is not None:
            if refuse and not entry.given:
                with contextlib.suppress(OSError):
                    entry.listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                entry.listener.close()
            entry.listener = None
            self._status_dirty = True

    def close_listeners(self, *, refuse: bool = False) -> None:
        """Close the supervisor's copies of the listening sockets (see :meth:`_close_listener`)."""
        for entry in self.services.values():
            self._close_listener(entry, refuse=refuse)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Bind, start every service process, supervise until quit; returns an exit code."""
        # SIGCHLD only wakes the loop: a process that ended is seen at once, not a tick later.
        self.signals.install(
            (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
        )
        try:
            self.bind_all()
            _log.info(
                "supervisor starting",
                services=list(self.services),
                processes=sum(len(e.workers) for e in self.services.values()),
            )
            for slot in list(self.engine.slots):
                self._handle(self.engine.start(slot))
            while self._state != "stopped":
                self.tick()
                self.signals.wait(_TICK_SECONDS)
        finally:
            self.close_listeners()
            self.engine.stop_all()
            self.engine.wait_stopped()
            self.scoreboard.close()
            self.signals.restore()
            if self.status_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.status_file.unlink()
        self.hooks.appd_quit(reason="signal")
        _log.info("supervisor stopped")
        return 0

    def tick(self) -> None:
        """One turn of the loop (see the module docstring)."""
        for signum in self.signals.take():
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._begin_shutdown(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                reopen_log_file()  # the processes the reload starts write to a moved log anew
                self.request_reload()
            elif signum == signal.SIGUSR1 and reopen_log_file():
                for slot in self.engine.running():
                    self.engine.signal(slot, signal.SIGUSR1)
        self._handle(self.engine.tick())
        if self._state == "stopping":
            if not self.engine.running():
                self._state = "stopped"
        else:
            self._advance_reload()
            self._close_idle_listeners()
            if self._state == "starting" and all(
                slot.state is not SlotState.STARTING and slot.state is not SlotState.BACKOFF
                for entry in self.services.values()
                for slot in entry.workers
            ):
                self._state = "running"
                self._status_dirty = True
        if self._status_dirty or time.monotonic() - self._last_status >= _STATUS_EVERY_SECONDS:
            self.write_status()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            self._status_dirty = True
            proc: _Proc = event.slot.data
            entry = proc.service
            if event.kind == "ready":
                _log.info(
                    "service process ready", service=entry.name, worker=proc.worker,
                    pid=event.slot.pid,
                )
            elif event.kind == "killed":
                _log.warning(
                    "service process did not stop within its grace period; killing",
                    service=entry.name, worker=proc.worker, pid=event.slot.pid,
                    grace=event.slot.grace,
                )
            elif event.kind in ("exited", "stopped"):
                self._on_exit(event, proc)

    def _on_exit(self, event: Event, proc: _Proc) -> None:
        entry, slot, info = proc.service, event.slot, event.exit
        assert info is not None
        if proc.board_slot is not None:
            if proc.worker < len(entry.requests_done):
                entry.requests_done[proc.worker] += self.scoreboard.read(proc.board_slot).requests
            self.scoreboard.release(proc.board_slot)
            proc.board_slot = None
        if slot in entry.draining and slot.pid is None:
            entry.draining.remove(slot)
        if event.kind == "stopped":
            _log.info(
                "service process stopped", service=entry.name, worker=proc.worker,
                pid=info.pid, how=info.describe(),
            )
            self._forget_if_retired(slot, entry)
            return
        will_restart = event.delay is not None
        clean = info.clean
        (_log.info if clean else _log.warning)(
            "service process exited",
            service=entry.name, worker=proc.worker, pid=info.pid, exitcode=info.exitcode,
            signal=info.signal, restarts=slot.restarts, will_restart=will_restart,
            restart_in=event.delay,
        )
        if clean:
            return
        self.hooks.appd_crash(
            service=entry.service, worker=proc.worker, exitcode=info.exitcode,
            signal=info.signal, restarts=slot.restarts, will_restart=will_restart,
        )
        if not will_restart:
            tracker = slot.tracker
            _log.error(
                "service process gave up: too many restarts",
                service=entry.name, worker=proc.worker, restarts=slot.restarts,
                reason=None if tracker is None else tracker.gave_up_because,
            )

    def _forget_if_retired(self, slot: Slot, entry: _Service) -> None:
        """Drop a stopped slot that no worker uses any more (replaced, or its service gone)."""
        current = slot in entry.workers and not entry.removed
        in_step = any(step.new is slot or step.old is slot for step in self._reload_steps.values())
        if not current and not in_step and slot.pid is None:
            self.engine.remove(slot)
        if entry.removed and not any(s.pid is not None for s in entry.workers + entry.draining):
            for worker_slot in entry.workers:
                self.engine.remove(worker_slot)
            self._close_listener(entry)
            if self.services.get(entry.name) is entry:
                del self.services[entry.name]
            _log.info("service removed", service=entry.name)

    def _close_idle_listeners(self) -> None:
        """A service no process will run again (all FATAL or stopped) refuses connections at
        once: its listener is closed (and opened again when a process starts)."""
        for entry in self.services.values():
            if entry.listener is None or entry.name in self._reload_steps:
                continue
            live = [
                s for s in entry.workers + entry.draining
                if s.pid is not None or s.state is SlotState.BACKOFF
            ]
            if not live:
                _log.warning(
                    "no process left to serve; closing the listener", service=entry.name
                )
                self._close_listener(entry, refuse=True)

    # -- shutdown ---------------------------------------------------------------------------

    def _begin_shutdown(self, reason: str) -> None:
        if self._state == "stopping" or self._state == "stopped":
            return
        _log.info("supervisor stopping", reason=reason)
        self._state = "stopping"
        self.engine.stop_all()
        self.close_listeners(refuse=True)
        self._status_dirty = True

    # -- reload -----------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload now, or once the reload in progress ends (never inside it)."""
        if self._state == "stopping" or self._state == "stopped":
            return
        if self._reloading:
            if not self._reload_again:
                _log.info("reload requested during a reload; queued to follow it")
            self._reload_again = True
            return
        self._begin_reload()

    def _begin_reload(self) -> None:
        self._reloading = True
        self._state = "reloading"
        self._status_dirty = True
        _log.info("reload started")
        self.hooks.appd_reload(phase="begin")
        fresh: set[Slot] = set()
        try:
            self._apply_plan(fresh)
        except Exception as exc:
            _log.error(
                "reload failed: the configuration or the services did not load; "
                "the running processes keep serving",
                error=str(exc),
                exc_info=not isinstance(exc, AppdError),
            )
            # Nothing is replaced: a deploy that does not load costs no process and no restart.
            self._reload_failures += 1
            self._last_reload_error = str(exc)
            self._last_reload_failed_at = time.time()
            self._reload_queue = {}
            return
        self._last_reload_error = None
        self._reload_queue = {
            entry.name: deque(i for i, s in enumerate(entry.workers) if s not in fresh)
            for entry in self.services.values()
            if not entry.removed
        }

    def _apply_plan(self, fresh: set[Slot]) -> None:
        """Load again; add new services, stop removed ones, resize changed ones.  Slots started
        here (already running the new code) are added to ``fresh``."""
        if self.reload_plan is None:
            return
        plan = self.reload_plan()
        for service in plan.services:
            reload_mode(service)
        self.config = plan.config
        self.hooks = plan.hooks
        wanted = {service.name: service for service in plan.services}
        for name, entry in list(self.services.items()):
            if name not in wanted:
                _log.info("service no longer configured; stopping it", service=name)
                entry.removed = True
                self._close_listener(entry, refuse=True)
                for slot in entry.workers:
                    self.engine.stop(slot)
                if entry.workers:
                    self._forget_if_retired(entry.workers[0], entry)
        for name, service in wanted.items():
            known = self.services.get(name)
            if known is not None and not known.removed:
                self._update_service(known, service, fresh)
                continue
            _log.info("service added", service=name)
            added = self._add_service(service, fresh=True)
            self._open_listener(added)
            for slot in added.workers:
                fresh.add(slot)
                self._handle(self.engine.start(slot))

    def _update_service(self, entry: _Service, service: AppServiceBase, fresh: set[Slot]) -> None:
        old_address = getattr(entry.service, "address", None)
        entry.service = service
        entry.config = self.config.service(service.name)
        for slot in entry.workers:
            slot.policy = entry.config.restart
            slot.grace = self._grace_for(entry.config)
        if getattr(service, "address", None) != old_address and entry.listener is not None:
            _log.info("service address changed", service=entry.name,
                      address=getattr(service, "address", None))
            self._close_listener(entry)
            self._open_listener(entry)
        wanted = entry.config.processes
        while len(entry.workers) > wanted:
            slot = entry.workers.pop()
            entry.requests_done.pop()
            self.engine.stop(slot)
            if slot.pid is None:
                self.engine.remove(slot)
            else:
                entry.draining.append(slot)
        while len(entry.workers) < wanted:
            index = len(entry.workers)
            slot = self._new_slot(entry, index, fresh=True)
            entry.workers.append(slot)
            entry.requests_done.append(0)
            fresh.add(slot)
            self._handle(self.engine.start(slot))

    def _advance_reload(self) -> None:
        if not self._reloading:
            return
        for name in list(self._reload_queue):
            entry = self.services.get(name)
            if entry is None or entry.removed:
                self._reload_queue.pop(name, None)
                self._reload_steps.pop(name, None)
                continue
            step = self._reload_steps.get(name)
            if step is None:
                queue = self._reload_queue[name]
                if not queue:
                    del self._reload_queue[name]
                    continue
                index = queue.popleft()
                if index >= len(entry.workers):
                    continue
                step = self._reload_steps[name] = self._begin_step(entry, index)
            if self._step_done(step):
                del self._reload_steps[name]
        if not self._reload_queue and not self._reload_steps:
            self._reloading = False
            if self._last_reload_error is None:  # a reload that did not load is not counted
                self._reloads += 1
            self._state = "running"
            self._status_dirty = True
            _log.info("reload finished")
            self.hooks.appd_reload(phase="end")
            if self._reload_again:
                self._reload_again = False
                self._begin_reload()

    def _begin_step(self, entry: _Service, index: int) -> _Step:
        old = entry.workers[index]
        step = _Step(entry, index, old)
        if old.pid is None:
            # Not running (backoff, fatal or stopped): start it afresh with the new code.
            self.engine.stop(old)
            step.old = None
            self.engine.remove(old)
            step.new = self._new_slot(entry, index, fresh=True)
            entry.workers[index] = step.new
            self._handle(self.engine.start(step.new))
        elif reload_mode(entry.service) == "stop-first":
            self.engine.stop(old)
        else:
            step.new = self._new_slot(entry, index, like=old, fresh=True)
            self._handle(self.engine.start(step.new))
        return step

    def _step_done(self, step: _Step) -> bool:
        entry, old, index = step.service, step.old, step.worker
        if step.new is None:
            assert old is not None
            if old.pid is not None:
                return False  # stop-first: wait until the old process is gone
            step.new = self._new_slot(entry, index, like=old, fresh=True)
            entry.workers[index] = step.new
            step.old = None
            self.engine.remove(old)
            self._handle(self.engine.start(step.new))
            return False
        new = step.new
        if new.state is SlotState.READY:
            if old is not None and entry.workers[index] is old:
                entry.workers[index] = new
                entry.draining.append(old)
                self.engine.stop(old)  # the goodbye: it drains and exits
                if old.pid is None:
                    entry.draining.remove(old)
                    self.engine.remove(old)
            return True
        if new.state is SlotState.FATAL:
            if old is not None and old.pid is not None and entry.workers[index] is old:
                _log.error(
                    "reload: the new process never became ready; the old one keeps serving",
                    service=entry.name, worker=index,
                )
                self.engine.remove(new)
            return True
        return False

    # -- status -----------------------------------------------------------------------------

    def _process_status(
        self, entry: _Service, slot: Slot, now: float, mono: float, *, current: bool
    ) -> dict[str, Any]:
        proc: _Proc = slot.data
        worker = proc.worker
        requests = 0
        if current and worker < len(entry.requests_done):
            requests = entry.requests_done[worker]
        heartbeat_age: float | None = None
        if proc.board_slot is not None and slot.pid is not None:
            info = self.scoreboard.read(proc.board_slot)
            requests += info.requests
            if info.heartbeat:
                heartbeat_age = round(max(0.0, mono - info.heartbeat), 3)
        return {
            "worker": worker,
            "state": slot.state.value,
            "pid": slot.pid,
            "restarts": slot.restarts,
            "uptime": (
                round(now - slot.started_at, 3)
                if slot.pid is not None and slot.started_at is not None
                else None
            ),
            "requests": requests,
            "heartbeat_age": heartbeat_age,
        }

    def status(self) -> dict[str, Any]:
        """The status document: what ``appd status --json`` prints and ``appd_status``
        receives (schema in docs/cli.md)."""
        now, mono = time.time(), time.monotonic()
        services: dict[str, Any] = {}
        for entry in self.services.values():
            processes = [
                self._process_status(entry, slot, now, mono, current=True)
                for slot in entry.workers
            ]
            draining = [
                self._process_status(entry, slot, now, mono, current=False)
                for slot in entry.draining
            ]
            state = _overall_state({p["state"] for p in processes})
            services[entry.name] = {
                "class": class_path(type(entry.service)),
                "state": state,
                "listening": entry.listener is not None if entry.socket_service else None,
                "restarts": sum(p["restarts"] for p in processes),
                "requests": sum(p["requests"] for p in processes)
                + sum(p["requests"] for p in draining),
                "processes": processes,
                "draining": draining,
            }
        state = self._state if self._state != "stopped" else "stopping"
        return {
            "state": state,
            "pid": os.getpid(),
            "started_at": self._started_at,
            "uptime": round(now - self._started_at, 3),
            "reloads": self._reloads,
            "reload_failures": self._reload_failures,
            "last_reload_error": self._last_reload_error,
            "last_reload_failed_at": self._last_reload_failed_at,
            "services": services,
            "disabled": self._disabled(services),
        }

    def _disabled(self, running: dict[str, Any]) -> list[str]:
        """Services the configuration names but does not run (``enabled = false``, or left out
        of the top-level ``enabled`` list): nothing listens for them, so their clients are
        refused at once."""
        config = self.config
        return sorted(
            name
            for name, table in config.services.items()
            if name not in running
            and (not table.enabled or (config.enabled is not None and name not in config.enabled))
        )

    def write_status(self) -> None:
        """Write the status file (atomically, if there is one) and fire ``appd_status``."""
        self._status_dirty = False
        self._last_status = time.monotonic()
        document = self.status()
        if self.status_file is not None:
            write_json_atomically(self.status_file, document)
        self.hooks.appd_status(status=document)


def _derive_keys(service: AppServiceBase) -> None:
    """Before forking a process of ``service``: derive its handshake keys here, once (see
    :meth:`SecureSocketAppService.derive_keys`), so that the forked process inherits them
    rather than spend the derivation's ~0.1 s between its start (or its restart after a crash)
    and its first answer.  A failure is left for the process to report, as it does when it
    starts with the same settings."""
    if isinstance(service, SecureSocketAppService):
        try:
            SecureSocketAppService.derive_keys(service)
        except Exception as exc:  # the process meets the same error and reports it
            _log.debug("handshake keys not derived before the fork", service=service.name,
                       error=type(exc).__name__)


def _overall_state(states: set[str]) -> str:
    for state in ("fatal", "backoff", "starting", "stopping", "ready"):
        if state in states:
            return state
    return "stopped"
