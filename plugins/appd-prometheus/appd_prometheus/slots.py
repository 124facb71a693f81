"""Stable metrics-file ids per process slot.

prometheus-client's multiprocess mode writes one set of files per process id.  Keyed by pid,
every restart would leave files behind; keyed by slot (service and worker), they are reused: a
restarted process takes over its predecessor's files and its counters go on from there.  Two
processes of one slot can overlap (a reload starts the new one before the old one stops), so
each process holds an ``flock`` on ``<id>.lock`` and takes the first id of its slot that nobody
holds: a slot has as many ids as it ever had processes alive at once (usually one or two).
The lock file holds the pid of its holder, which tells the supervisor whose gauges are live.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Slot", "claim_slot", "dead_ids"]


@dataclass(frozen=True)
class Slot:
    """The id this process writes its metrics under, and the descriptor holding it."""

    id: str
    fd: int

    def release(self) -> None:
        """Give the id up (the process exiting does the same)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def slot_prefix(service: str, worker: int) -> str:
    """The id prefix of a slot.  prometheus-client splits file names on ``_``, so the service
    name is written in hexadecimal (which also keeps any name a valid file name)."""
    return f"{service.encode().hex()}-{worker}-"


def claim_slot(directory: Path, service: str, worker: int) -> Slot:
    """Take the first free id of slot (``service``, ``worker``) in ``directory``."""
    prefix = slot_prefix(service, worker)
    generation = 0
    while True:
        slot_id = f"{prefix}{generation}"
        fd = os.open(directory / f"{slot_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            generation += 1
            continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return Slot(slot_id, fd)


def dead_ids(directory: Path, live_pids: Collection[int]) -> set[str]:
    """Ids whose last holder is not among ``live_pids`` (their gauges are stale)."""
    dead = set()
    for lock in directory.glob("*.lock"):
        try:
            holder = int(lock.read_text() or 0)
        except (OSError, ValueError):
            holder = 0
        if holder not in live_pids:
            dead.add(lock.stem)
    return dead
