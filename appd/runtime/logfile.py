"""A daemon's log file, reopened on request so that logrotate can move it away.

``appd start`` names the log file in :data:`LOG_FILE_ENV_VAR`, which every process of the run
inherits (the guardian, the supervisor, each service process, those a reload starts). SIGUSR1
(gunicorn's convention) makes each of them open the path again, for appending, and put the new
file on its standard output and error: ``dup2`` swaps a descriptor atomically, so a record is
written whole to the old file or to the new one, never lost. The supervisor reopens on a reload
(SIGHUP) too, so the processes a reload starts write to the new file.
"""

from __future__ import annotations

import os
import signal

__all__ = ["LOG_FILE_ENV_VAR", "install_reopen_handler", "reopen_log_file", "write_log_to"]

#: The environment variable naming the log file of a daemonized run (``appd start``).
LOG_FILE_ENV_VAR = "APPD_LOG_FILE"

#: The descriptors that write to the log file in this process: standard output and error, or
#: the one a service process's log handler keeps while 1 and 2 are its captured output.
_targets: tuple[int, ...] = (1, 2)


def write_log_to(*fds: int) -> None:
    """Name the descriptors :func:`reopen_log_file` replaces in this process."""
    global _targets
    _targets = fds


def reopen_log_file() -> bool:
    """Open :data:`LOG_FILE_ENV_VAR`'s file again (appending) in place of the descriptors that
    write the log (see :func:`write_log_to`; standard output and error by default);
    False when this process has no log file of its own (``appd run``: it inherits its output)."""
    path = os.environ.get(LOG_FILE_ENV_VAR)
    if not path:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError:
        return False  # the old file keeps everything; the next signal tries again
    try:
        for target in _targets:
            os.dup2(fd, target)
    finally:
        os.close(fd)
    return True


def install_reopen_handler() -> None:
    """In a service process: reopen the log file on SIGUSR1 (only when there is one; the
    handler only swaps two descriptors, which is safe at any point of the main thread)."""
    if os.environ.get(LOG_FILE_ENV_VAR):
        signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_log_file())
