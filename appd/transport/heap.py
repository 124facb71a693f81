"""Giving freed memory back to the operating system after a large frame.

A frame of several MiB passes through buffers of its own size (the receive buffer, the body, the
plaintext) and its decoded objects.  Freed, they stay in the C allocator's heaps (a thread's
arena keeps what it freed), so a service that once received a 16 MiB frame would keep that much
resident memory for good.  ``malloc_trim`` hands free heap pages back; it costs about a
millisecond, so it runs only after a frame of at least :data:`TRIM_AFTER` bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

__all__ = ["TRIM_AFTER", "trim_heap"]

#: Frames at least this large are followed by a trim of the heap.
TRIM_AFTER: Final = 1024 * 1024


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def trim_heap() -> None:
    """Return free heap memory to the operating system (a no-op without glibc)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
