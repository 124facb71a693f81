"""The local backend: slot files held with ``flock``, shared by the processes of one host.

A capacity ``pdu`` of limit 5 in directory ``D`` is the files ``D/pdu.slot0`` .. ``D/pdu.slot4``.
Holding a slot is holding an exclusive ``flock`` on its file, so the kernel frees the slot the
moment its holder dies, however it dies (``kill -9`` included): no lease ever outlives its
process, and nothing needs renewing.  The fencing counter is ``D/pdu.token`` (updated under its
own lock), and each waiter holds a locked file in ``D/pdu.waiting/`` so ``appd status`` can
count them.  A release wakes the waiters at once: slots are tried through read-only
descriptors, and the holder's record is written through a second, writable one that it closes
only after unlocking, so the kernel reports exactly one "closed after writing" event per release
to the waiters' ``inotify`` watch of the directory (a failed try, read-only, reports none).
Between wake-ups, and where ``inotify`` is unavailable, waiters poll the slots with jittered,
growing pauses (1 ms up to 20 ms).

Every process that shares the limit must use the same directory and the same limit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import select
import threading
import time
from pathlib import Path
from typing import Final

from appd.capacity.backend import CapacityStatus, Grant, HolderInfo
from appd.errors import CapacityUnavailable

__all__ = ["LocalBackend"]

#: First and longest pause between polls of the slots, in seconds.
POLL_MIN: Final = 0.001
POLL_MAX: Final = 0.02

_OPEN_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
#: Slots are tried (and held locked) read-only: closing a failed try wakes nobody.
_TRY_FLAGS: Final = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
#: inotify's "a file open for writing was closed" event, and its event header (wd, mask,
#: cookie, len).
_IN_CLOSE_WRITE: Final = 0x8
_IN_EVENT_HEADER: Final = 16
#: A holder's record is written over the slot file's first bytes, padded with spaces to this
#: width (JSON ignores them), and blanked on release: never truncated.  Truncating a file to
#: zero and writing it makes ext4 (``auto_da_alloc``) flush it to disk when it is closed, as
#: every release closes it: a disk write per release, and about 0.25 ms more before the waiters
#: hear of it.
_RECORD_BYTES: Final = 256
_BLANK_RECORD: Final = b" " * _RECORD_BYTES


def _write_record(fd: int, record: dict[str, object]) -> None:
    """Write a holder's record over the slot file's first :data:`_RECORD_BYTES` (or more, for
    a longer record), padded with spaces; the file is cut to that width when an earlier
    holder's longer record would trail it (cut, never to zero: see :data:`_RECORD_BYTES`).

    A status read while the record is written may see part of it (then the slot shows as
    ``(starting)``), or, over the record of a holder that died holding the slot, a mix of the
    two; either lasts only as long as the write."""
    data = json.dumps(record).encode()
    width = max(len(data), _RECORD_BYTES)
    os.pwrite(fd, data.ljust(width), 0)
    if os.fstat(fd).st_size > width:
        os.ftruncate(fd, width)


def _blank_record(fd: int) -> None:
    """Blank the whole record (spaces over it, the file's size unchanged)."""
    size = os.fstat(fd).st_size
    os.pwrite(fd, _BLANK_RECORD if size <= _RECORD_BYTES else b" " * size, 0)


class _Doorbell:
    """An ``inotify`` watch of the slot directory: :meth:`wait` returns as soon as a slot file
    open for writing is closed (a release), or after ``seconds``.  Falls back to sleeping when
    ``inotify`` cannot be used (not Linux, or the watch limit reached)."""

    def __init__(self, directory: Path) -> None:
        self.fd = -1
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CLOSE_WRITE) < 0:
                os.close(fd)
                return
        except (OSError, AttributeError):
            return
        self.fd = fd

    def drain(self) -> None:
        """Forget the events so far (before an attempt: a release after it rings again)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                while os.read(self.fd, 4096):
                    pass

    def wait(self, seconds: float) -> None:
        if self.fd < 0:
            time.sleep(seconds)
        else:
            poll = select.poll()  # one per wait: a poll object serves one thread at a time
            poll.register(self.fd, select.POLLIN)
            poll.poll(seconds * 1000)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalBackend:
    """Slot files in ``directory`` for capacity ``name`` with ``limit`` slots."""

    def __init__(self, name: str, limit: int, directory: Path) -> None:
        self.name = name
        self.limit = limit
        self.directory = Path(directory)
        self.label = f"local {self.directory}"
        self.leases_expire = False
        self._waiting: dict[str, tuple[int, Path]] = {}
        self._token_lock = threading.Lock()
        self._token_file: tuple[int, int] | None = None  # (pid, fd)
        #: The process's watch of the directory, opened on its first wait: (pid, doorbell).
        #: One per process (inotify instances are a scarce per-user resource); every thread
        #: waiting in it when a release happens wakes.
        self._doorbell: tuple[int, _Doorbell] | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._waiters_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise self._unavailable("cannot create the slot directory", exc) from None

    @property
    def _waiters_dir(self) -> Path:
        return self.directory / f"{self.name}.waiting"

    def _slot_path(self, index: int) -> Path:
        return self.directory / f"{self.name}.slot{index}"

    def _unavailable(self, what: str, exc: OSError) -> CapacityUnavailable:
        return CapacityUnavailable(
            f"capacity {self.name!r} ({self.label}): {what}: {exc.strerror or exc}"
        )

    # -- holding ---------------------------------------------------------------------------

    def try_acquire(self, holder: str) -> Grant | None:
        """Lock the first free slot file (starting from a random one, so acquirers spread)."""
        start = random.randrange(self.limit)
        for step in range(self.limit):
            index = (start + step) % self.limit
            path = self._slot_path(index)
            try:
                fd = os.open(path, _TRY_FLAGS, 0o644)
            except OSError as exc:
                raise self._unavailable(f"cannot open {path.name}", exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise self._unavailable(f"cannot lock {path.name}", exc) from None
            try:
                record_fd = os.open(path, _OPEN_FLAGS, 0o644)
            except OSError as exc:
                os.close(fd)
                raise self._unavailable(f"cannot open {path.name}", exc) from None
            try:
                token = self._next_token()
                _write_record(record_fd, {"holder": holder, "token": token})
            except BaseException:
                os.close(fd)
                os.close(record_fd)
                raise
            self._stop_waiting(holder)
            return Grant(holder, token, handle=(fd, index, record_fd))
        self._start_waiting(holder)
        return None

    def _next_token(self) -> int:
        """One more than the last token, and never below the clock in microseconds, so tokens
        keep increasing even when the counter file is removed."""
        with self._token_lock:  # flock does not exclude threads sharing one open file
            try:
                fd = self._token_fd()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise self._unavailable("cannot open the token counter", exc) from None
            try:
                text = os.pread(fd, 64, 0).strip()
                last = int(text) if text.isdigit() else 0
                token = max(last + 1, time.time_ns() // 1000)
                os.pwrite(fd, str(token).encode().ljust(len(text)), 0)
                return token
            except OSError as exc:
                raise self._unavailable("cannot update the token counter", exc) from None
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _token_fd(self) -> int:
        """The counter file, opened once per process (a forked child opens its own: an open
        file shared with the parent would share its lock)."""
        if self._token_file is None or self._token_file[0] != os.getpid():
            fd = os.open(self.directory / f"{self.name}.token", _OPEN_FLAGS, 0o644)
            self._token_file = (os.getpid(), fd)
        return self._token_file[1]

    def wait(self, holder: str, seconds: float, attempt: int) -> None:
        """Wait for a release (the thread's doorbell rings), at most a jittered pause that grows
        with ``attempt`` (never more than ``seconds``)."""
        pause = min(POLL_MAX, POLL_MIN * 2 ** min(attempt, 8))
        pause = max(0.0, min(seconds, pause * random.uniform(0.5, 1.5)))
        doorbell = self._bell()
        doorbell.wait(pause)
        doorbell.drain()

    def _bell(self) -> _Doorbell:
        """This process's doorbell (a forked child opens its own: a shared inotify descriptor
        would share its events)."""
        with self._token_lock:
            current = self._doorbell
            if current is None or current[0] != os.getpid():
                current = self._doorbell = (os.getpid(), _Doorbell(self.directory))
            return current[1]

    def withdraw(self, holder: str) -> None:
        self._stop_waiting(holder)

    def renew(self, grant: Grant) -> bool:
        """The slot file is still the one at its path (nobody removed the directory)."""
        fd, index, _record_fd = grant.handle
        try:
            held = os.fstat(fd)
            current = self._slot_path(index).stat()
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)

    def release(self, grant: Grant) -> None:
        """Blank the slot's record and unlock it (closing the file drops the lock), then close
        the record's writable descriptor: the event that wakes the waiters, after the unlock."""
        fd, _index, record_fd = grant.handle
        with contextlib.suppress(OSError):
            _blank_record(record_fd)
        os.close(fd)
        os.close(record_fd)

    # -- waiters -------------------------------------------------------------------------------

    def _start_waiting(self, holder: str) -> None:
        """A locked file in the waiters' directory, there while ``holder`` waits."""
        if holder in self._waiting:
            return
        path = self._waiters_dir / holder.replace("/", "_")
        partial = path.with_name(path.name + ".new")
        try:
            fd = os.open(partial, _OPEN_FLAGS | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(partial, path)
        except OSError:
            return  # counting waiters is for operators; waiting works without it
        self._waiting[holder] = (fd, path)

    def _stop_waiting(self, holder: str) -> None:
        entry = self._waiting.pop(holder, None)
        if entry is not None:
            fd, path = entry
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)

    # -- operators -----------------------------------------------------------------------------

    def status(self) -> CapacityStatus:
        holders = []
        for index in range(self.limit):
            record = self._held_record(self._slot_path(index))
            if record is not None:
                holders.append(record)
        return CapacityStatus(
            self.name, self.limit, self.label, tuple(holders), self._count_waiters()
        )

    def _held_record(self, path: Path) -> HolderInfo | None:
        """The holder of the slot at ``path``, or None when nobody holds it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(f"cannot read {path.name}", exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held
            else:
                return None
            try:
                data = json.loads(os.pread(fd, 4096, 0) or b"{}")
                return HolderInfo(str(data["holder"]), int(data["token"]))
            except (ValueError, KeyError, TypeError):
                return HolderInfo("(starting)")
        finally:
            os.close(fd)

    def _count_waiters(self) -> int:
        count = 0
        try:
            entries = list(self._waiters_dir.iterdir())
        except OSError:
            return 0
        for path in entries:
            if path.name.endswith(".new"):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1
            else:
                with contextlib.suppress(OSError):
                    path.unlink()  # left by a waiter that died
            finally:
                os.close(fd)
        return count

    def check(self) -> None:
        """The directory is usable: a slot file opens."""
        try:
            fd = os.open(self._slot_path(0), _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise self._unavailable("cannot open a slot file", exc) from None
        os.close(fd)

    def close(self) -> None:
        for holder in list(self._waiting):
            self._stop_waiting(holder)
        if self._token_file is not None and self._token_file[0] == os.getpid():
            os.close(self._token_file[1])
        self._token_file = None
        if self._doorbell is not None and self._doorbell[0] == os.getpid():
            self._doorbell[1].close()
        self._doorbell = None
