"""A scoreboard shared by the supervisor and its service processes.

One memory map backed by an anonymous in-memory file (``memfd``), so it survives the ``exec`` of
a service process: the supervisor creates it and passes its descriptor down; a service process
maps the same pages with :meth:`Scoreboard.attach`.  Each service process owns one slot and is
its only writer: its state, the requests it answered, its heartbeat (the monotonic clock, which
every process of the machine shares) and its open connections.  The supervisor reads every slot
(readiness, request counts and heartbeat ages for ``appd status``); the processes of one service
read each other's connection counts to share the load evenly.  No locks: each field is one
aligned 8-byte word with a single writer.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from enum import IntEnum
from typing import Final, NamedTuple

__all__ = ["DEFAULT_CAPACITY", "Scoreboard", "SlotInfo", "SlotState"]

#: state, requests, heartbeat, connections, group, 3 spare words.
_SLOT: Final = struct.Struct("=qqdqqqqq")
_HEADER: Final = struct.Struct("=qqqqqqqq")
_STATE, _REQUESTS, _HEARTBEAT, _CONNECTIONS, _GROUP = (0, 8, 16, 24, 32)
_WORD: Final = struct.Struct("=q")
_FLOAT: Final = struct.Struct("=d")

#: Slots a scoreboard holds by default: service processes alive at once, replacements included.
DEFAULT_CAPACITY: Final = 1024


class SlotState(IntEnum):
    """What a service process last said about itself."""

    EMPTY = 0
    STARTING = 1
    READY = 2
    STOPPING = 3


class SlotInfo(NamedTuple):
    """One slot as read."""

    state: SlotState
    requests: int
    #: The monotonic time of the last heartbeat (0.0: none yet).
    heartbeat: float
    connections: int
    #: Which service the slot belongs to (0: none).
    group: int


class Scoreboard:
    """Fixed-size shared slots; see the module docstring."""

    def __init__(self, fd: int, capacity: int, *, owner: bool) -> None:
        self.fd = fd
        self.capacity = capacity
        self._owner = owner
        self._map = mmap.mmap(fd, _HEADER.size + capacity * _SLOT.size)
        self._free = list(range(capacity - 1, -1, -1)) if owner else []

    @classmethod
    def create(cls, capacity: int = DEFAULT_CAPACITY) -> Scoreboard:
        """A new, zeroed scoreboard (in the supervisor)."""
        fd = os.memfd_create("appd-scoreboard", 0)  # close-on-exec off: flags 0
        os.set_inheritable(fd, False)
        os.ftruncate(fd, _HEADER.size + capacity * _SLOT.size)
        board = cls(fd, capacity, owner=True)
        _HEADER.pack_into(board._map, 0, capacity, 0, 0, 0, 0, 0, 0, 0)
        return board

    @classmethod
    def attach(cls, fd: int) -> Scoreboard:
        """Map the scoreboard whose descriptor the supervisor passed down (in a service
        process)."""
        header = os.pread(fd, _HEADER.size, 0)
        capacity = _HEADER.unpack(header)[0]
        return cls(fd, capacity, owner=False)

    # -- the supervisor ---------------------------------------------------------------------

    def allocate(self, group: int) -> int:
        """A free slot for a new process of service ``group`` (cleared).

        :raises RuntimeError: every slot is taken.
        """
        if not self._free:
            raise RuntimeError(f"the scoreboard's {self.capacity} slots are all taken")
        slot = self._free.pop()
        offset = self._offset(slot)
        _SLOT.pack_into(self._map, offset, SlotState.EMPTY, 0, 0.0, 0, group, 0, 0, 0)
        used = _WORD.unpack_from(self._map, 8)[0]
        if slot + 1 > used:
            _WORD.pack_into(self._map, 8, slot + 1)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back once its process is gone."""
        _SLOT.pack_into(self._map, self._offset(slot), SlotState.EMPTY, 0, 0.0, 0, 0, 0, 0, 0)
        self._free.append(slot)

    def read(self, slot: int) -> SlotInfo:
        """The slot as its process last wrote it."""
        state, requests, heartbeat, connections, group, *_ = _SLOT.unpack_from(
            self._map, self._offset(slot)
        )
        return SlotInfo(SlotState(state), requests, heartbeat, connections, group)

    # -- a service process ------------------------------------------------------------------

    def set_state(self, slot: int, state: SlotState) -> None:
        """Record this process's state."""
        _WORD.pack_into(self._map, self._offset(slot) + _STATE, state)

    def set_requests(self, slot: int, requests: int) -> None:
        """Record how many requests this process has answered."""
        _WORD.pack_into(self._map, self._offset(slot) + _REQUESTS, requests)

    def beat(self, slot: int) -> None:
        """Record that this process is alive and its loop turning (now)."""
        _FLOAT.pack_into(self._map, self._offset(slot) + _HEARTBEAT, time.monotonic())

    def set_connections(self, slot: int, connections: int) -> None:
        """Record how many connections this process holds open."""
        _WORD.pack_into(self._map, self._offset(slot) + _CONNECTIONS, connections)

    def group_load(self, group: int) -> tuple[int, int]:
        """``(ready processes, their open connections)`` of service ``group``."""
        used = _WORD.unpack_from(self._map, 8)[0]
        processes = connections = 0
        for slot in range(min(used, self.capacity)):
            state, _, _, conns, slot_group, *_ = _SLOT.unpack_from(self._map, self._offset(slot))
            if slot_group == group and state == SlotState.READY:
                processes += 1
                connections += conns
        return processes, connections

    def close(self) -> None:
        """Unmap the memory and close the descriptor."""
        self._map.close()
        os.close(self.fd)

    @staticmethod
    def _offset(slot: int) -> int:
        return _HEADER.size + slot * _SLOT.size
