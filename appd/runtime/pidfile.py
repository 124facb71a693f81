"""Pid files that are locked for the whole life of the process that wrote them.

The lock (``fcntl.flock``) is what says "a daemon is running", not the file's existence: the
kernel drops the lock the moment its holder dies, even by ``kill -9``, so a file left behind by
a crash is simply taken over by the next start, and a file holding garbage is stale too.

Writing is atomic for readers that never lock (``kill $(cat app.pid)``): the pid is written to a
temporary file in the same directory, which is locked first and then renamed over the pid file.
A process that finds the lock taken reads the pid only once the file it saw locked is still the
one at the path and names a live process; until then it is looking at a start in progress and
tries again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from appd.errors import PidFileLocked

__all__ = ["PidFile", "PidFileLocked", "read_live_pid", "remove_if_stale", "take_pid_file"]

#: How long :meth:`PidFile.acquire` waits for a lock holder in the middle of its own start to
#: write its pid before giving up with ``PidFileLocked(pid=None)``.
SETTLE_SECONDS = 2.0

_RETRY_SECONDS = 0.01


def _parse_pid(raw: bytes) -> int | None:
    try:
        pid = int(raw.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _process_running(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder_pid(fd: int, path: str) -> int | None:
    """The pid in the locked file ``fd``, if it is still the file at ``path`` and names a live
    process; None while the holder is in the middle of writing it (or the path moved on)."""
    if not _same_file(fd, path):
        return None
    pid = _parse_pid(os.pread(fd, 64, 0))
    if pid is None or not _process_running(pid):
        return None
    return pid


class PidFile:
    """A pid file holding this process's pid, locked until :meth:`release` or process exit.

    Use it as a context manager or call :meth:`acquire` and :meth:`release`.  The lock belongs to
    the open file: a forked child that keeps the descriptor keeps the lock alive, so children
    close inherited descriptors (see :func:`appd.runtime.process.spawn`).

    :param path: where the pid file lives; its directory must exist.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None
        self._owner: int | None = None

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None and self._owner == os.getpid()

    def acquire(self) -> None:
        """Take the lock and write this process's pid into the file.

        :raises PidFileLocked: a live process holds the lock (its pid in ``.pid``).
        :raises OSError: the file cannot be created (missing directory, no permission, ...).
        """
        if self.held:
            return
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder_pid(fd, self.path)
                os.close(fd)
                if pid is not None:
                    raise PidFileLocked(self.path, pid) from None
                if time.monotonic() >= deadline:
                    raise PidFileLocked(self.path, None) from None
                time.sleep(_RETRY_SECONDS)
                continue
            if not _same_file(fd, self.path):
                # The holder we waited for removed or replaced the file: start again on the new one.
                os.close(fd)
                continue
            try:
                self._fd = self._replace_with_own_pid()
            finally:
                os.close(fd)
            self._owner = os.getpid()
            return

    def _replace_with_own_pid(self) -> int:
        directory, name = os.path.split(os.path.abspath(self.path))
        temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            os.rename(temporary, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return fd

    def release(self) -> None:
        """Remove the file and drop the lock; does nothing unless this process holds it."""
        if not self.held or self._fd is None:
            return
        fd, self._fd, self._owner = self._fd, None, None
        if _same_file(fd, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PidFile({self.path!r}, held={self.held})"


@contextlib.contextmanager
def _probe(path: str, operation: int) -> Iterator[tuple[int, bool] | None]:
    """Open an existing ``path`` and try ``operation`` without waiting: ``(fd, got_the_lock)``,
    or None when there is no file.  Closing the descriptor on exit drops any lock taken."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            yield fd, False
        else:
            yield fd, True
    finally:
        os.close(fd)


def read_live_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid of the live process holding the lock on ``path``; None when nobody holds it.

    A missing file, a stale file left by a killed process, and garbage all give None.
    """
    target = os.fspath(path)
    with _probe(target, fcntl.LOCK_SH) as probe:
        if probe is None or probe[1]:
            return None
        return _holder_pid(probe[0], target)


def remove_if_stale(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` when no live process holds its lock; True when a file was removed.

    A parent uses it after it had to SIGKILL a child that could not remove its own pid file.
    """
    target = os.fspath(path)
    with _probe(target, fcntl.LOCK_EX) as probe:
        if probe is None or not probe[1] or not _same_file(probe[0], target):
            return False
        os.unlink(target)
        return True


def take_pid_file(path: str | os.PathLike[str]) -> PidFile:
    """The one way appd takes a pid file: acquired, or a clear reason why not.

    :returns: the held :class:`PidFile` (release it, or let the process exit).
    :raises PidFileLocked: a live process holds it (its pid in ``.pid``; None when the holder
        did not write one in time).
    :raises OSError: the file cannot be created; ``strerror`` reads
        ``"cannot create pid file PATH: REASON"``.
    """
    pid_file = PidFile(path)
    try:
        pid_file.acquire()
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot create pid file {os.fspath(path)}: {exc.strerror}"
        ) from None
    return pid_file
