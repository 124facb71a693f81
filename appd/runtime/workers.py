"""``start_workers``: a set of named worker processes, each restarted when it crashes.

The calling process (typically a daemon's executor) becomes the workers' supervisor until quit
is requested: it polls them every ``check_interval``, restarts one that exited abnormally after
the restart policy's delay, and on quit stops them all (SIGTERM, then SIGKILL after the grace
period), removing any pid file a killed worker could not remove itself.  Each worker is a slot
of the supervision engine (:mod:`appd.runtime.engine`), as the appd supervisor's processes are.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appd.logging import get_logger
from appd.runtime.engine import Engine, Event, Slot, SlotState
from appd.runtime.entry import load_entry, parse_entry
from appd.runtime.pidfile import remove_if_stale
from appd.runtime.process import spawn
from appd.runtime.quit import quit_requested, sleep
from appd.runtime.restart import RestartPolicy, as_seconds
from appd.runtime.signals import install_quit_handlers, restore_handlers

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_RESTART_INTERVAL",
    "WorkerStartInfo",
    "start_workers",
]

#: How often :func:`start_workers` looks at its workers by default.
DEFAULT_CHECK_INTERVAL = timedelta(seconds=0.2)
#: The first wait before restarting a crashed worker by default (then backing off).
DEFAULT_RESTART_INTERVAL = timedelta(seconds=1)
#: How long workers get to stop after SIGTERM before SIGKILL, by default.
DEFAULT_GRACE_SECONDS = 5.0

log = get_logger("appd.runtime")


@dataclass(frozen=True, kw_only=True)
class WorkerStartInfo:
    """What :func:`start_workers` needs to run one worker."""

    #: The worker's pid file, locked while it runs and removed when it stops.
    pid_filename: str
    #: ``"module:function"``, imported in the worker process and called with ``args``.
    entry: str
    #: A name unique among the workers; it is the worker's logging role.
    name: str
    #: Where the worker's stdout is appended.
    stdout_filename: str = os.devnull
    #: Where the worker's stderr is appended.
    stderr_filename: str = os.devnull
    #: A :func:`logging.config.dictConfig` dictionary for the worker; appd's JSON lines on
    #: stderr when None.
    logging_config: Mapping[str, Any] | None = None
    #: Keyword arguments for the entry.
    args: Mapping[str, Any] | None = None


@dataclass
class _Worker:
    """What the debug file says of one worker; the engine's slot drives it."""

    info: WorkerStartInfo
    slot: Slot
    state: str = "starting"
    started_at: datetime | None = None

    def snapshot(self) -> dict[str, Any]:
        tracker = self.slot.tracker
        last_exit = self.slot.last_exit
        return {
            "state": self.state,
            "pid": self.slot.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "restarts": tracker.restarts if tracker is not None else 0,
            "last_exit": last_exit.describe() if last_exit is not None else None,
            "pid_filename": self.info.pid_filename,
        }


def _run_worker(entry: str, args: Mapping[str, Any]) -> None:
    load_entry(entry)(**args)


def _validate(infos: list[WorkerStartInfo]) -> None:
    names: set[str] = set()
    pid_files: set[str] = set()
    for info in infos:
        if info.name in names:
            raise ValueError(f"duplicate worker name {info.name!r}")
        names.add(info.name)
        pid_file = os.path.abspath(info.pid_filename)
        if pid_file in pid_files:
            raise ValueError(f"worker {info.name!r} shares pid file {info.pid_filename!r}")
        pid_files.add(pid_file)
        parse_entry(info.entry)


def _write_debug(filename: str | None, workers: Iterable[_Worker]) -> None:
    if filename is None:
        return
    document = {
        "updated_at": datetime.now(UTC).isoformat(),
        "supervisor_pid": os.getpid(),
        "workers": {worker.info.name: worker.snapshot() for worker in workers},
    }
    temporary = f"{filename}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
        os.replace(temporary, filename)
    except OSError as exc:
        log.warning("cannot write the debug file", debug_filename=filename, error=str(exc))


def start_workers(
    infos: Iterable[WorkerStartInfo],
    *,
    restart_interval: timedelta | float | RestartPolicy = DEFAULT_RESTART_INTERVAL,
    check_interval: timedelta | float = DEFAULT_CHECK_INTERVAL,
    debug_filename: str | None = None,
    grace_period: timedelta | float = DEFAULT_GRACE_SECONDS,
) -> None:
    """Run each worker in its own process until quit is requested, restarting crashed ones.

    A worker that exits non-zero or is killed by a signal is restarted after ``restart_interval``
    (backing off per :class:`~appd.runtime.restart.RestartPolicy`, giving up on a worker that
    keeps crashing); one that exits 0 is done.  Returns once quit is requested (SIGTERM/SIGINT
    to this process) and every worker has stopped, or earlier when no worker is left to run.

    :param infos: the workers; names must be unique.
    :param restart_interval: the first wait before a restart (seconds or ``timedelta``), or a
        whole ``RestartPolicy``.
    :param check_interval: how often the workers are checked (seconds or ``timedelta``).
    :param debug_filename: a JSON file with every worker's state, pid, start time and restarts,
        rewritten atomically on each change; none when None.
    :param grace_period: how long workers get between SIGTERM and SIGKILL when stopping.
    :raises ValueError: duplicate names or pid files, or a malformed entry; nothing is started.
    """
    listed = list(infos)
    _validate(listed)
    policy = RestartPolicy.coerce(restart_interval)
    check = as_seconds(check_interval, name="check_interval")
    grace = as_seconds(grace_period, name="grace_period")
    engine = Engine()
    workers = [_Worker(info, engine.add(_slot(info, policy, grace))) for info in listed]
    for worker in workers:
        worker.slot.data = worker
    main_thread = threading.current_thread() is threading.main_thread()
    previous = install_quit_handlers() if main_thread else {}
    try:
        _supervise(engine, workers, check, debug_filename)
    finally:
        running = [worker.info.name for worker in workers if worker.slot.pid is not None]
        if running:
            log.info("stopping workers", workers=running)
        engine.stop_all()
        engine.wait_stopped(on_events=_record)
        _write_debug(debug_filename, workers)
        restore_handlers(previous)


def _slot(info: WorkerStartInfo, policy: RestartPolicy, grace: float) -> Slot:
    def launch() -> int:
        return spawn(
            lambda: _run_worker(info.entry, dict(info.args or {})),
            role=info.name,
            stdout_filename=info.stdout_filename,
            stderr_filename=info.stderr_filename,
            logging_config=info.logging_config,
            pid_filename=info.pid_filename,
        )

    return Slot(name=info.name, launch=launch, policy=policy, grace=grace)


def _supervise(
    engine: Engine, workers: list[_Worker], check: float, debug_filename: str | None
) -> None:
    for worker in workers:
        _record(engine.start(worker.slot))
    _write_debug(debug_filename, workers)
    while not quit_requested():
        events = engine.tick()
        _record(events)
        if events:
            _write_debug(debug_filename, workers)
        pending = [s.restart_at for s in engine.slots if s.state is SlotState.BACKOFF]
        if not pending and not engine.running():
            log.info("no worker left to run")
            return
        wait = check
        if pending:
            wait = max(0.0, min(check, min(t for t in pending if t is not None) - time.monotonic()))
        sleep(wait)


def _record(events: list[Event]) -> None:
    """Log what happened to the workers and update what the debug file says of them."""
    for event in events:
        worker: _Worker = event.slot.data
        name = worker.info.name
        info = event.exit
        if event.kind == "started":
            worker.state = "running"
            worker.started_at = datetime.now(UTC)
            log.info("worker started", worker=name, worker_pid=event.slot.pid)
        elif event.kind == "stopped":
            worker.state = "stopped"
            if event.slot.killed and remove_if_stale(worker.info.pid_filename):
                log.info("removed the pid file of a killed worker", worker=name)
        elif event.kind == "killed":
            log.warning("did not stop within the grace period; killing", worker=name,
                        grace=event.slot.grace)
        elif event.kind == "exited" and info is not None:
            if info.clean:
                worker.state = "exited"
                log.info("worker finished", worker=name)
            elif event.delay is None:
                worker.state = "fatal"
                tracker = event.slot.tracker
                log.error("worker keeps failing; giving up", worker=name, how=info.describe(),
                          reason=tracker.gave_up_because if tracker is not None else None)
            else:
                worker.state = "backoff"
                tracker = event.slot.tracker
                log.warning("worker failed; restarting", worker=name, how=info.describe(),
                            delay=event.delay,
                            restarts=tracker.restarts if tracker is not None else 0)
