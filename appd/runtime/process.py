"""Forking supervised children, and stopping and reaping them.

Every process appd forks (a daemon's guardian and executor, a worker, a service process) goes
through :func:`become_child` and leaves through :func:`run_child`, so none of them ever returns
into the caller's code: an exception that escaped a forked child would run the caller's code a
second time, in the wrong process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

from appd.errors import PidFileLocked
from appd.logging import configure_logging, get_logger
from appd.runtime.logfile import install_reopen_handler
from appd.runtime.pidfile import take_pid_file
from appd.runtime.quit import clear_quit
from appd.runtime.signals import (
    blocked_quit_signals,
    install_quit_handlers,
    reset_signal_handlers,
    unblock_quit_signals,
)

__all__ = [
    "INHERIT",
    "PARENT_DEATH_SIGNAL",
    "ExitInfo",
    "become_child",
    "close_inherited_fds",
    "flush_stdio",
    "reap",
    "redirect_stdio",
    "run_child",
    "spawn",
    "spawn_exec",
    "stop_processes",
]

#: What a supervised child receives when its parent dies without stopping it (``kill -9`` of
#: the parent): SIGKILL, so no child outlives its supervisor whatever its own code does.  A
#: graceful stop always comes from the living parent as SIGTERM first.
PARENT_DEATH_SIGNAL = signal.SIGKILL

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.02

log = get_logger("appd.runtime")

#: Logging handlers inherited from the parent: kept referenced, never closed or collected, so
#: closing their file objects can never close a descriptor number reused in the child.
_inherited_handlers: list[logging.Handler] = []
_inherited_streams: list[object] = []


class ExitInfo(NamedTuple):
    """How a child ended.  Both codes are None when its status could not be collected."""

    pid: int
    #: The exit code, when it exited on its own.
    exitcode: int | None
    #: The signal number, when a signal killed it.
    signal: int | None

    @property
    def clean(self) -> bool:
        """True for exit code 0: the process finished its work and is not to be restarted."""
        return self.exitcode == 0

    def describe(self) -> str:
        """A readable "exit code 3" / "killed by SIGKILL" / "status unknown"."""
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        if self.exitcode is not None:
            return f"exit code {self.exitcode}"
        return "status unknown"


def _exit_info(pid: int, status: int) -> ExitInfo:
    code = os.waitstatus_to_exitcode(status)
    return ExitInfo(pid, None, -code) if code < 0 else ExitInfo(pid, code, None)


def flush_stdio() -> None:
    """Flush Python's stdout and stderr, so buffered text is not written twice after a fork."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _set_parent_death_signal(signum: int, parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        # The parent died before the signal was armed: nobody will ever stop us.
        os._exit(1)


#: A redirect target meaning "keep the descriptor inherited from the parent": never reopened by
#: path, so a socket, a pipe or a file opened without O_APPEND is shared (same open file
#: description, same offset) rather than reopened (which fails for a socket, and overwrites
#: for a non-append file).  As ``stdout_filename`` it makes stdout a duplicate of descriptor 2.
INHERIT = "<inherit>"


def redirect_stdio(stdout_filename: str, stderr_filename: str) -> None:
    """stdin from /dev/null; stdout and stderr appended to the given files (created if missing).

    :data:`INHERIT` keeps the parent's stderr (duplicated, not reopened) for either stream.

    :raises OSError: a file cannot be opened; its message names the file.
    """
    targets = (
        (0, os.devnull, os.O_RDONLY),
        (2, stderr_filename, os.O_WRONLY | os.O_CREAT | os.O_APPEND),
        (1, stdout_filename, os.O_WRONLY | os.O_CREAT | os.O_APPEND),
    )
    opened = []
    try:
        flush_stdio()
        for target_fd, filename, flags in targets:
            if filename == INHERIT:
                if target_fd == 1:
                    os.dup2(2, 1)
                continue
            try:
                fd = os.open(filename, flags, 0o666)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot open {filename!r}: {exc.strerror}") from exc
            opened.append(fd)
            os.dup2(fd, target_fd)
    finally:
        for fd in opened:
            if fd > 2:
                os.close(fd)
    # The parent's stream objects may not write to descriptors 0-2 at all (a test runner's
    # capture, say): fresh, line-buffered ones do.  The old ones stay referenced so that
    # collecting them never closes a descriptor number now in other use.
    _inherited_streams.extend((sys.stdin, sys.stdout, sys.stderr))
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )


def close_inherited_fds(keep: Collection[int] = ()) -> None:
    """Close every descriptor above 2 except those in ``keep``."""
    wanted = {0, 1, 2, *keep}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in wanted:
            with contextlib.suppress(OSError):
                os.close(fd)


def _all_loggers() -> list[logging.Logger]:
    return [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]


def _forget_inherited_logging() -> None:
    for logger in _all_loggers():
        _inherited_handlers.extend(logger.handlers)
        logger.handlers.clear()


def _flush_logging() -> None:
    # Not logging.shutdown(): that would also flush and close the handlers inherited from the
    # parent, whose descriptor numbers may now belong to something else.
    for logger in _all_loggers():
        for handler in logger.handlers:
            with contextlib.suppress(Exception):
                handler.flush()


def become_child(
    role: str,
    *,
    stdout_filename: str = os.devnull,
    stderr_filename: str = os.devnull,
    logging_config: Mapping[str, Any] | None = None,
    keep_fds: Collection[int] = (),
    parent: int | None = None,
) -> None:
    """Turn a freshly forked process into a clean appd child; call it first thing after fork.

    In order: a fresh quit flag with SIGTERM/SIGINT handlers (then those signals are unblocked),
    :data:`PARENT_DEATH_SIGNAL` armed when ``parent`` (the parent's pid) is given, the parent's
    logging handlers dropped, stdio redirected, every other inherited descriptor closed except
    ``keep_fds``, and logging configured for ``role``.

    :raises OSError: a redirect file cannot be opened.
    :raises ValueError: ``logging_config`` is rejected by ``dictConfig``.
    """
    reset_signal_handlers()
    clear_quit()
    install_quit_handlers()
    install_reopen_handler()
    unblock_quit_signals()
    if parent is not None:
        _set_parent_death_signal(PARENT_DEATH_SIGNAL, parent)
    _forget_inherited_logging()
    redirect_stdio(stdout_filename, stderr_filename)
    close_inherited_fds(keep_fds)
    configure_logging(role, logging_config=logging_config)


def run_child(body: Callable[[], int]) -> NoReturn:
    """Run ``body`` in a forked child and leave with ``os._exit``, whatever happens.

    ``body`` returns the exit code; ``SystemExit`` gives its code; any other exception is logged
    with its traceback (to the log and to stderr) and gives 1.
    """
    code = 1
    try:
        try:
            code = body()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            text = traceback.format_exc()
            with contextlib.suppress(Exception):
                log.error("process failed", traceback=text)
            with contextlib.suppress(Exception):
                sys.stderr.write(text)
    finally:
        flush_stdio()
        _flush_logging()
        os._exit(code)


def spawn(
    target: Callable[[], object],
    *,
    role: str,
    stdout_filename: str = os.devnull,
    stderr_filename: str = os.devnull,
    logging_config: Mapping[str, Any] | None = None,
    keep_fds: Collection[int] = (),
    pid_filename: str | None = None,
) -> int:
    """Run ``target()`` in a supervised child process and return the child's pid.

    The child (see :func:`become_child`) has its own quit flag and handlers, dies with its parent
    (:data:`PARENT_DEATH_SIGNAL`), reads /dev/null, appends stdout and stderr to the given
    files, keeps no inherited descriptor but ``keep_fds`` (a listening socket, say), logs as
    ``role``, and holds ``pid_filename`` locked (when given) until ``target`` returns.  It exits
    0 when ``target`` returns, 1 when it raises (traceback logged), ``SystemExit``'s code when it
    calls ``sys.exit``; it never returns into the caller's code.  A live holder of
    ``pid_filename`` makes the child log the conflict and exit 1.

    Call it from the main thread: the parent-death signal follows the thread that forked.
    """
    parent = os.getpid()

    def child() -> int:
        become_child(
            role,
            stdout_filename=stdout_filename,
            stderr_filename=stderr_filename,
            logging_config=logging_config,
            keep_fds=keep_fds,
            parent=parent,
        )
        return _run_holding(target, pid_filename)

    flush_stdio()
    with blocked_quit_signals():
        pid = os.fork()
        if pid == 0:
            run_child(child)
    return pid


def spawn_exec(
    argv: Sequence[str],
    *,
    keep_fds: Collection[int] = (),
    env: Mapping[str, str] | None = None,
    stdout_to_stderr: bool = True,
) -> int:
    """Start ``argv`` (a program and its arguments) as a supervised child; return its pid.

    The child is forked and at once replaced by the program (``execve``), so it runs code as it
    is on disk now, not a copy of the caller's memory.  Before the exec it gets default signal
    dispositions and an empty signal mask, dies with its parent (:data:`PARENT_DEATH_SIGNAL`),
    reads /dev/null, writes its standard output to the caller's standard error when
    ``stdout_to_stderr`` (so everything it prints reaches the caller's log), and inherits no
    descriptor but 0-2 and ``keep_fds``.  A program that cannot be executed exits 127 with the
    reason on standard error.

    Call it from the main thread: the parent-death signal follows the thread that forked.
    """
    parent = os.getpid()
    program = list(argv)
    environment = dict(os.environ if env is None else env)
    flush_stdio()
    with blocked_quit_signals():
        pid = os.fork()
        if pid == 0:
            try:
                reset_signal_handlers()
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                _set_parent_death_signal(PARENT_DEATH_SIGNAL, parent)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                if stdout_to_stderr:
                    os.dup2(2, 1)
                close_inherited_fds(keep_fds)
                for fd in keep_fds:
                    os.set_inheritable(fd, True)
                os.execve(program[0], program, environment)
            except BaseException:
                with contextlib.suppress(BaseException):
                    reason = traceback.format_exc()
                    os.write(2, f"cannot execute {program[0]!r}:\n{reason}".encode())
            finally:
                os._exit(127)
    return pid


def _run_holding(target: Callable[[], object], pid_filename: str | None) -> int:
    """Run ``target`` holding ``pid_filename`` (when given): 0 when it returns, 1 when the pid
    file is held by a live process or cannot be created."""
    pid_file = None
    try:
        if pid_filename is not None:
            try:
                pid_file = take_pid_file(pid_filename)
            except PidFileLocked as exc:
                log.error("cannot start", reason=str(exc), holder=exc.pid)
                return 1
            except OSError as exc:
                log.error("cannot start", reason=exc.strerror)
                return 1
        log.info("started")
        target()
        return 0
    finally:
        if pid_file is not None:
            pid_file.release()


def reap(pids: Iterable[int] | None = None) -> list[ExitInfo]:
    """Collect children that have exited, without blocking.

    :param pids: the children to look at; None collects any child of this process (do not use
        it in a process that also runs ``subprocess``: it would steal their statuses).
    :returns: one :class:`ExitInfo` per collected child.  A pid that is not (or no longer) a
        child of this process is reported with both codes None.
    """
    found: list[ExitInfo] = []
    if pids is None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            found.append(_exit_info(pid, status))
        return found
    for pid in list(pids):
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            found.append(ExitInfo(pid, None, None))
            continue
        if got == pid:
            found.append(_exit_info(pid, status))
    return found


def stop_processes(pids: Iterable[int], *, grace: float) -> list[ExitInfo]:
    """Stop children: SIGTERM now, SIGKILL to those still running after ``grace`` seconds.

    Returns once every one of them has been reaped, with how each ended.
    """
    pending = set(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    ended: list[ExitInfo] = []
    deadline = time.monotonic() + grace
    while pending:
        for info in reap(pending):
            pending.discard(info.pid)
            ended.append(info)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
    for pid in pending:
        log.warning("did not stop within the grace period; killing", child=pid, grace=grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pending:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            ended.append(ExitInfo(pid, None, None))
        else:
            ended.append(_exit_info(pid, status))
    return ended
