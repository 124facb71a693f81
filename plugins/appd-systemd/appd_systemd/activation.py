"""Socket activation: listening sockets that systemd (or ``systemd-socket-activate``) passes.

systemd passes ``LISTEN_FDS`` descriptors starting at 3, sets ``LISTEN_PID`` to the process
they are meant for and, with ``FileDescriptorName=``, ``LISTEN_FDNAMES`` (colon-separated names,
one per descriptor).  A passed socket serves the service whose name it carries, or else the
service whose address it is bound to.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["LISTEN_ENV", "LISTEN_FDS_START", "PassedSocket", "find_socket", "passed_sockets"]

#: The first passed descriptor (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START: Final = 3

#: What systemd sets for a socket-activated service.
LISTEN_ENV: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class PassedSocket:
    """One passed listening socket and the name systemd gave it (``""``: none)."""

    sock: socket.socket
    name: str


def passed_sockets(environ: Mapping[str, str], pid: int) -> list[PassedSocket]:
    """The sockets passed to process ``pid``: none when ``LISTEN_PID`` names another process.

    Each descriptor becomes a :class:`socket.socket` (family and type read from the
    descriptor) that is not inherited by the processes appd starts.

    :raises ValueError: naming the variable that is malformed, or a descriptor that is not a
        listening stream socket.
    """
    count = environ.get("LISTEN_FDS", "")
    if not count:
        return []
    owner = environ.get("LISTEN_PID", "")
    if not owner.isdigit():
        raise ValueError(f"LISTEN_PID must be a process id, not {owner!r}")
    if int(owner) != pid:
        return []
    if not count.isdigit():
        raise ValueError(f"LISTEN_FDS must be a number of descriptors, not {count!r}")
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + int(count))
    names: Sequence[str] = environ.get("LISTEN_FDNAMES", "").split(":")
    if len(names) != len(fds):
        names = [""] * len(fds)
    passed = []
    for fd, name in zip(fds, names, strict=True):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ValueError(f"LISTEN_FDS: descriptor {fd} is not a socket: {exc}") from None
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.detach()
            raise ValueError(f"LISTEN_FDS: descriptor {fd} is not a listening stream socket")
        os.set_inheritable(fd, False)
        passed.append(PassedSocket(sock, name if name != "unknown" else ""))
    return passed


def find_socket(
    passed: Sequence[PassedSocket],
    name: str,
    *,
    host: str | None,
    port: int | None,
    path: str | None,
) -> socket.socket | None:
    """The passed socket for service ``name``: by name first, else by its bound address."""
    for item in passed:
        if item.name == name:
            return item.sock
    for item in passed:
        if item.name and item.name != name:
            continue  # named for another service
        bound = item.sock.getsockname()
        if item.sock.family == socket.AF_UNIX:
            if path is not None and bound in (path, path.encode()):
                return item.sock
        elif path is None and port and bound[1] == port and host in (bound[0], None):
            return item.sock
    return None
