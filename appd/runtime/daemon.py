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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from appd.errors import EntryLoadError, PidFileLocked
from appd.logging import get_logger
from appd.runtime.engine import Engine, Event, Slot
from appd.runtime.entry import load_entry, parse_entry
from appd.runtime.logfile import reopen_log_file
from appd.runtime.pidfile import take_pid_file
from appd.runtime.process import become_child, flush_stdio, run_child, spawn
from appd.runtime.quit import quit_requested
from appd.runtime.restart import RestartPolicy
from appd.runtime.signals import SignalQueue, blocked_quit_signals

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
    try:
        pid_file = take_pid_file(plan.pid_filename)
    except PidFileLocked as exc:
        if exc.pid is None:
            return _launch_failed(plan, status_fd, str(exc))
        log.info("daemon already running", holder=exc.pid, pid_filename=plan.pid_filename)
        _send(status_fd, DaemonRunStatus.ALREADY_RUNNING, pid=exc.pid)
        return 0
    except OSError as exc:
        return _launch_failed(plan, status_fd, str(exc.strerror))
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


def _guard(plan: _DaemonPlan, run_entry: Callable[[], object]) -> int:
    """Run the executor as the one slot of a supervision engine until it finishes, gives up,
    or quit is requested; forward :data:`FORWARDED_SIGNALS` to it (queued by their handlers,
    passed on by this loop)."""
    engine = Engine()
    slot = engine.add(
        Slot(
            name="executor",
            launch=lambda: spawn(
                run_entry,
                role="executor",
                stdout_filename=plan.stdout_filename,
                stderr_filename=plan.stderr_filename,
                logging_config=plan.logging_config,
            ),
            policy=plan.restart_policy,
            grace=plan.grace_period,
        )
    )
    forwarded = SignalQueue()
    forwarded.install(FORWARDED_SIGNALS)
    try:
        engine.start(slot)
        while not quit_requested():
            for signum in forwarded.take():
                if signum in (signal.SIGUSR1, signal.SIGHUP):
                    reopen_log_file()
                engine.signal(slot, signum)
            for event in engine.tick():
                code = _on_executor_event(event)
                if code is not None:
                    return code
            forwarded.wait(GUARDIAN_POLL_SECONDS)  # a signal to forward ends it at once
        executor = slot.pid
        log.info("quit requested; stopping the executor", executor=executor)

        def stopped(events: list[Event]) -> None:
            for event in events:
                if event.exit is not None:
                    log.info("executor stopped", executor=executor, how=event.exit.describe())

        engine.stop(slot)
        engine.wait_stopped(on_events=stopped)
        return 0
    finally:
        forwarded.restore()


def _on_executor_event(event: Event) -> int | None:
    """Log what happened to the executor; the guardian's exit code when it is over."""
    info = event.exit
    if event.kind != "exited" or info is None:
        return None
    executor = info.pid
    if info.clean:
        log.info("executor finished", executor=executor)
        return 0
    slot = event.slot
    if slot.tracker is None:
        log.error("executor failed; no restart_interval, so the daemon stops",
                  executor=executor, how=info.describe())
        return 1
    if event.delay is None:
        log.error("executor keeps failing; giving up", executor=executor,
                  how=info.describe(), reason=slot.tracker.gave_up_because)
        return 1
    log.warning("executor failed; restarting", executor=executor, how=info.describe(),
                delay=event.delay, restarts=slot.tracker.restarts)
    return None
