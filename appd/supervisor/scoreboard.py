"""A scoreboard shared by the supervisor and its service processes.

One anonymous shared memory map, created before the first fork, with a fixed slot per service
process.  A service process writes only its own slot (its state and how many requests it has
served); the supervisor reads every slot to learn when a process is ready and to report request
counts in ``appd status``.  No locks are needed: each slot has a single writer and every field is
one aligned 8-byte word.
"""

from __future__ import annotations

import mmap
import struct
from enum import IntEnum
from typing import Final

__all__ = ["Scoreboard", "SlotCounter", "SlotState"]

_SLOT: Final = struct.Struct("=qq")


class SlotState(IntEnum):
    """What a service process last said about itself."""

    EMPTY = 0
    STARTING = 1
    READY = 2
    STOPPING = 3


class Scoreboard:
    """Fixed-size shared slots: ``(state, requests served)`` for each service process."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, max(1, slots) * _SLOT.size)

    def reset(self, slot: int) -> None:
        """Clear a slot before a new process takes it."""
        _SLOT.pack_into(self._map, slot * _SLOT.size, SlotState.EMPTY, 0)

    def set_state(self, slot: int, state: SlotState) -> None:
        """Record a process's state (called by the process that owns the slot)."""
        _, requests = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        _SLOT.pack_into(self._map, slot * _SLOT.size, state, requests)

    def count_request(self, slot: int) -> None:
        """Add one served request to the slot (called by the process that owns it)."""
        state, requests = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        _SLOT.pack_into(self._map, slot * _SLOT.size, state, requests + 1)

    def counter(self, slot: int) -> SlotCounter:
        """The request counter of ``slot``, for the service process that owns it."""
        return SlotCounter(self, slot)

    def read(self, slot: int) -> tuple[SlotState, int]:
        """The state and the request count of a slot."""
        state, requests = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return SlotState(state), int(requests)

    def close(self) -> None:
        """Unmap the memory (in the supervisor, once every process has stopped)."""
        self._map.close()


class SlotCounter:
    """A process's request counter, kept in its scoreboard slot: the one count that the
    server bumps, the supervisor reads and ``appd status`` shows."""

    __slots__ = ("_board", "_slot")

    def __init__(self, board: Scoreboard, slot: int) -> None:
        self._board = board
        self._slot = slot

    def count(self) -> None:
        """One more request answered."""
        self._board.count_request(self._slot)

    @property
    def value(self) -> int:
        """Requests answered so far by this slot's process."""
        return self._board.read(self._slot)[1]
