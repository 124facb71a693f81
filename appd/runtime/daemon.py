"""``start_daemon``: a detached, supervised daemon with a locked pid file.

Three processes take part::

    caller ──fork──> intermediate (setsid, fork, exit) ──> guardian ──spawn──> executor

The *guardian* is the daemon proper: it holds the pid file, restarts the *executor* (which runs
the user's entry) when it crashes, and passes SIGTERM/SIGINT on to it.  The intermediate process
exists only so the guardian is not a session leader and can never acquire a controlling
terminal.  The guardian reports back to the caller through a pipe, once it holds the lock and
has imported the entry, so ``LAUNCHED`` means the daemon really runs.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from appd.errors import EntryLoadError, PidFileLocked
from appd.logging import get_logger
from appd.runtime.entry import load_entry, parse_entry
from appd.runtime.pidfile import PidFile
from appd.runtime.process import (
    ExitInfo,
    become_child,
    flush_stdio,
    reap,
    run_child,
    spawn,
    stop_processes,
)
from appd.runtime.quit import quit_requested, sleep
from appd.runtime.restart import RestartPolicy, RestartTracker
from appd.runtime.signals import blocked_quit_signals

__all__ = [
    "FORWARDED_SIGNALS",
    "GUARDIAN_GRACE_SECONDS",
    "GUARDIAN_POLL_SECONDS",
    "DaemonRunStatus",
    "start_daemon",
]

#: How long the guardian lets the executor stop after passing on SIGTERM, before SIGKILL.  It is
#: longer than :data:`appd.runtime.workers.DEFAULT_GRACE_SECONDS`, so an executor running
#: workers has time to stop them gracefully first.
GUARDIAN_GRACE_SECONDS = 10.0

#: Signals the guardian passes on to the executor (an application's "reload", say) rather than
#: dying of them.
FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

#: How often the guardian looks whether the executor has exited.
GUARDIAN_POLL_SECONDS = 0.1

log = get_logger("appd.runtime")


class DaemonRunStatus(enum.Enum):
    """The outcome of :func:`start_daemon`."""

    #: The guardian holds the pid file and imported the entry; the second value is its pid.
    LAUNCHED = "launched"
    #: A live daemon holds the pid file; the second value is its pid.
    ALREADY_RUNNING = "already_running"
    #: Nothing was started; the reason was logged and written to ``stderr_filename``.
    LAUNCH_FAILED = "launch_failed"


@dataclass(frozen=True)
class _DaemonPlan:
    pid_filename: str
    daemon_entry: str
    daemon_args: Mapping[str, Any]
    stdout_filename: str
    stderr_filename: str
    logging_config: Mapping[str, Any] | None
    restart_policy: RestartPolicy | None
    working_directory: str | None
    umask: int
    caller_directory: str
    grace_period: float


def start_daemon(
    *,
    pid_filename: str,
    daemon_entry: str,
    daemon_args: Mapping[str, Any] | None = None,
    stdout_filename: str = os.devnull,
    stderr_filename: str = os.devnull,
    logging_config: Mapping[str, Any] | None = None,
    restart_interval: timedelta | float | RestartPolicy | None = None,
    working_directory: str | None = None,
    umask: int = 0o022,
    grace_period: float = GUARDIAN_GRACE_SECONDS,
) -> tuple[DaemonRunStatus, int | None]:
    """Start ``daemon_entry`` as a detached daemon supervised by a guardian process.

    :param pid_filename: the guardian's pid file, locked for its whole life and removed when it
        exits.  A stale file (its holder is dead, or it holds garbage) is taken over.
    :param daemon_entry: ``"module:function"`` (``"module:obj.method"`` too), imported in the
        guardian exactly as the caller would import it.
    :param daemon_args: keyword arguments for the entry (default: none).
    :param stdout_filename: where the daemon's stdout is appended (default: ``/dev/null``).
    :param stderr_filename: where the daemon's stderr is appended (default: ``/dev/null``).
    :param logging_config: a :func:`logging.config.dictConfig` dictionary applied in guardian
        and executor; by default appd's JSON lines go to stderr.
    :param restart_interval: None (the default) never restarts the executor.  Seconds or a
        ``timedelta``: restart it after it exits non-zero or is killed, waiting this long first,
        then backing off per :class:`~appd.runtime.restart.RestartPolicy`'s defaults.  A
        ``RestartPolicy`` sets every detail.
    :param working_directory: the daemon's working directory; None keeps the caller's.  The pid
        and redirect file names are resolved against the caller's directory either way.
    :param umask: the daemon's umask (default ``0o022``).
    :param grace_period: seconds the executor gets to stop after the guardian passes on SIGTERM
        or SIGINT, before SIGKILL (default :data:`GUARDIAN_GRACE_SECONDS`).
    :returns: ``(LAUNCHED, guardian_pid)``, ``(ALREADY_RUNNING, pid_of_running_guardian)`` or
        ``(LAUNCH_FAILED, None)``.
    :raises ValueError: ``daemon_entry`` is not of the form ``"module:function"``.
    """
    parse_entry(daemon_entry)
    here = os.getcwd()
    plan = _DaemonPlan(
        pid_filename=os.path.join(here, pid_filename),
        daemon_entry=daemon_entry,
        daemon_args=dict(daemon_args or {}),
        stdout_filename=os.path.join(here, stdout_filename),
        stderr_filename=os.path.join(here, stderr_filename),
        logging_config=logging_config,
        restart_policy=None if restart_interval is None else RestartPolicy.coerce(restart_interval),
        working_directory=working_directory,
        umask=umask,
        caller_directory=here,
        grace_period=grace_period,
    )
    read_fd, write_fd = os.pipe()
    flush_stdio()
    with blocked_quit_signals():
        intermediate = os.fork()
        if intermediate == 0:
            os.close(read_fd)
            run_child(lambda: _intermediate_main(plan, write_fd))
    os.close(write_fd)
    try:
        report = _read_report(read_fd)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(intermediate, 0)
    status = DaemonRunStatus(report.get("status", DaemonRunStatus.LAUNCH_FAILED.value))
    if status is DaemonRunStatus.LAUNCH_FAILED:
        reason = report.get("reason", "the daemon exited before reporting its status")
        log.error("daemon launch failed", entry=daemon_entry, reason=reason)
        return status, None
    pid = report.get("pid")
    return status, pid if isinstance(pid, int) else None


def _read_report(fd: int) -> dict[str, Any]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        report = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _intermediate_main(plan: _DaemonPlan, status_fd: int) -> int:
    os.setsid()
    if os.fork() == 0:
        run_child(lambda: _guardian_main(plan, status_fd))
    return 0


def _send(status_fd: int, status: DaemonRunStatus, **extra: Any) -> None:
    os.write(status_fd, json.dumps({"status": status.value, **extra}).encode())
    os.close(status_fd)


def _launch_failed(plan: _DaemonPlan, status_fd: int, reason: str) -> int:
    with contextlib.suppress(Exception):
        log.error("daemon launch failed", entry=plan.daemon_entry, reason=reason)
    if plan.logging_config is not None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"daemon launch failed: {reason}\n")
    _send(status_fd, DaemonRunStatus.LAUNCH_FAILED, reason=reason)
    return 1


def _guardian_main(plan: _DaemonPlan, status_fd: int) -> int:
    os.umask(plan.umask)
    # "" on sys.path means "the current directory": pin it to the caller's, so the entry module
    # imports here exactly as it would in the caller, whatever working_directory says.
    sys.path[:] = [entry or plan.caller_directory for entry in sys.path]
    try:
        if plan.working_directory is not None:
            os.chdir(plan.working_directory)
        become_child(
            "guardian",
            stdout_filename=plan.stdout_filename,
            stderr_filename=plan.stderr_filename,
            logging_config=plan.logging_config,
            keep_fds=(status_fd,),
        )
    except Exception as exc:  # a redirect that cannot open, a logging_config dictConfig rejects
        return _launch_failed(plan, status_fd, f"{type(exc).__name__}: {exc}")
    pid_file = PidFile(plan.pid_filename)
    try:
        pid_file.acquire()
    except PidFileLocked as exc:
        if exc.pid is None:
            return _launch_failed(plan, status_fd, str(exc))
        log.info("daemon already running", holder=exc.pid, pid_filename=plan.pid_filename)
        _send(status_fd, DaemonRunStatus.ALREADY_RUNNING, pid=exc.pid)
        return 0
    except OSError as exc:
        return _launch_failed(
            plan, status_fd, f"cannot create pid file {plan.pid_filename!r}: {exc.strerror}"
        )
    try:
        try:
            entry = load_entry(plan.daemon_entry)
        except EntryLoadError as exc:
            pid_file.release()  # before reporting: the caller may look for the file at once
            return _launch_failed(plan, status_fd, str(exc))
        log.info("daemon launched", entry=plan.daemon_entry, pid_filename=plan.pid_filename)
        _send(status_fd, DaemonRunStatus.LAUNCHED, pid=os.getpid())
        return _guard(plan, lambda: entry(**plan.daemon_args))
    finally:
        pid_file.release()


def _wait_for_exit(pid: int) -> ExitInfo | None:
    """The executor's exit, or None once quit is requested while it still runs."""
    while not quit_requested():
        ended = reap([pid])
        if ended:
            return ended[0]
        sleep(GUARDIAN_POLL_SECONDS)
    return None


def _forward_to(pid: int) -> None:
    """Pass SIGHUP, SIGUSR1 and SIGUSR2 sent to the guardian on to the executor ``pid``."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)


def _guard(plan: _DaemonPlan, run_entry: Callable[[], object]) -> int:
    tracker = RestartTracker(plan.restart_policy) if plan.restart_policy is not None else None
    while not quit_requested():
        executor = spawn(
            run_entry,
            role="executor",
            stdout_filename=plan.stdout_filename,
            stderr_filename=plan.stderr_filename,
            logging_config=plan.logging_config,
        )
        _forward_to(executor)
        if tracker is not None:
            tracker.started(time.monotonic())
        ended = _wait_for_exit(executor)
        if ended is None:
            log.info("quit requested; stopping the executor", executor=executor)
            for info in stop_processes([executor], grace=plan.grace_period):
                log.info("executor stopped", executor=executor, how=info.describe())
            return 0
        if ended.clean:
            log.info("executor finished", executor=executor)
            return 0
        if tracker is None:
            log.error("executor failed; no restart_interval, so the daemon stops",
                      executor=executor, how=ended.describe())
            return 1
        delay = tracker.exited(time.monotonic())
        if delay is None:
            log.error("executor keeps failing; giving up", executor=executor,
                      how=ended.describe(), reason=tracker.gave_up_because)
            return 1
        log.warning("executor failed; restarting", executor=executor, how=ended.describe(),
                    delay=delay, restarts=tracker.restarts)
        sleep(delay)
    return 0
