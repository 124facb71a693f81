"""The process runtime: daemons, workers, pid files, signals and restart policy.

Knows nothing of services, sockets or plugins; everything above it is built on it.

- :mod:`~appd.runtime.quit` — the quit flag and a quit-aware ``sleep``.
- :mod:`~appd.runtime.signals` — SIGTERM/SIGINT raise the flag; child signal hygiene.
- :mod:`~appd.runtime.pidfile` — pid files locked for the holder's life.
- :mod:`~appd.runtime.process` — forking supervised children, stopping and reaping them.
- :mod:`~appd.runtime.restart` — the restart policy shared by every supervisor.
- :mod:`~appd.runtime.engine` — the supervision engine every supervisor runs on: process slots,
  states, restarts with backoff, stops with deadlines.
- :mod:`~appd.runtime.entry` — ``"module:function"`` entries.
- :mod:`~appd.runtime.daemon` — ``start_daemon``.
- :mod:`~appd.runtime.workers` — ``start_workers``.
"""

from __future__ import annotations

from appd.runtime.daemon import DaemonRunStatus, start_daemon
from appd.runtime.pidfile import PidFile, read_live_pid
from appd.runtime.quit import quit_requested, request_quit, sleep
from appd.runtime.restart import RestartPolicy, RestartTracker
from appd.runtime.workers import WorkerStartInfo, start_workers

__all__ = [
    "DaemonRunStatus",
    "PidFile",
    "RestartPolicy",
    "RestartTracker",
    "WorkerStartInfo",
    "quit_requested",
    "read_live_pid",
    "request_quit",
    "sleep",
    "start_daemon",
    "start_workers",
]
