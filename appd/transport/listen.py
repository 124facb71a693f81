"""Creating a service's listening socket (TCP or Unix), with clear errors."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from appd.errors import AddressInUse, ConfigurationError

__all__ = [
    "DEFAULT_SOCKET_MODE", "LISTEN_BACKLOG", "bind_listener", "checked_socket_mode",
    "format_address",
]

#: Listen backlog; the kernel caps it at net.core.somaxconn.  Deep, so that a burst of connection
#: attempts waits in the kernel's queue instead of being dropped (a dropped SYN costs the client a
#: one-second retransmission).
LISTEN_BACKLOG = 4096
#: Seconds a TCP connection may stay silent before the kernel hands it to the service anyway
#: (``TCP_DEFER_ACCEPT``): a client speaks first, so connections that never send anything (a
#: connect flood) stay in the kernel and never take the service's time or handshake slots.
DEFER_ACCEPT_SECONDS = 1
#: Permissions of a service's Unix socket file: its owner only, whatever the umask.
DEFAULT_SOCKET_MODE = 0o600


def format_address(host: str | None, port: int | None, path: str | None) -> str:
    """``host:port`` or ``unix:path``, as errors and logs show it."""
    if path:
        return f"unix:{path}"
    return f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"


def bind_listener(
    name: str,
    host: str | None,
    port: int | None,
    path: str | None,
    *,
    socket_mode: int = DEFAULT_SOCKET_MODE,
) -> socket.socket:
    """A socket bound and listening on ``path`` (Unix) or ``host``:``port`` (TCP).

    A Unix socket file gets ``socket_mode`` (0600 by default: only its owner may connect)
    whatever the umask.  Raises :class:`AddressInUse` naming the service and the address when
    another socket holds it, and :class:`ConfigurationError` when neither a port nor a path is
    set.
    """
    if path:
        return _bind_unix(name, path, socket_mode)
    if port is None:
        raise ConfigurationError(f"service {name!r} has neither a port nor a path to listen on")
    address = format_address(host, port, None)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(f"service {name!r}: cannot resolve {address}: {exc}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
    return _listen(sock, sockaddr, name, address)


def checked_socket_mode(name: str, mode: Any) -> int:
    """``mode`` if it is permission bits (an int from 0 to 0o777); else ConfigurationError."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ConfigurationError(
            f"service {name!r}: socket_mode must be permission bits such as 0o600, not {mode!r}"
        )
    return mode


def _bind_unix(name: str, path: str, mode: int) -> socket.socket:
    checked_socket_mode(name, mode)
    _remove_stale_unix_socket(name, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Nobody can connect between bind and listen, so setting the mode in between leaves no
    # window in which the umask's permissions apply.
    return _listen(sock, path, name, format_address(None, None, path), lambda: os.chmod(path, mode))


def _listen(
    sock: socket.socket,
    sockaddr: Any,
    name: str,
    address: str,
    before_listen: Callable[[], None] | None = None,
) -> socket.socket:
    try:
        sock.bind(sockaddr)
        if before_listen is not None:
            before_listen()
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise _bind_error(name, address, exc) from None
    return sock


def _remove_stale_unix_socket(name: str, path: str) -> None:
    """Unlink a socket file nobody listens on any more (left by a killed process)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUse(f"service {name!r} cannot listen on unix:{path}: not a socket file")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise AddressInUse(f"service {name!r} cannot listen on unix:{path}: address already in use")


def _bind_error(name: str, address: str, exc: OSError) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(f"service {name!r} cannot listen on {address}: address already in use")
    return ConfigurationError(f"service {name!r} cannot listen on {address}: {exc.strerror}")
