"""Socket options both ends set: no Nagle delay, and timeouts kept by the kernel.

A Python-level socket timeout makes every ``recv`` a ``poll`` plus a ``recv``; ``SO_RCVTIMEO`` on
a blocking socket gets the same deadline from the kernel for one system call.  A receive that
times out then raises :class:`BlockingIOError`.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["set_kernel_timeouts", "set_nodelay", "set_send_timeout"]


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def set_kernel_timeouts(sock: socket.socket, receive: float, send: float) -> None:
    """Make ``sock`` blocking, with kernel receive and send timeouts in seconds."""
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(receive))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(send))


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Change the kernel send timeout of a blocking ``sock``."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(max(seconds, 0.001)))


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on a TCP socket (a no-op for Unix sockets)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
