"""Creating a service's listening socket (TCP or Unix), with clear errors."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import Any

from appd.errors import AddressInUse, ConfigurationError

__all__ = ["LISTEN_BACKLOG", "bind_listener", "format_address"]

#: Listen backlog; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024


def format_address(host: str | None, port: int | None, path: str | None) -> str:
    """``host:port`` or ``unix:path``, as errors and logs show it."""
    if path:
        return f"unix:{path}"
    return f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"



def bind_listener(name: str, host: str | None, port: int | None, path: str | None) -> socket.socket:
    """A socket bound and listening on ``path`` (Unix) or ``host``:``port`` (TCP).

    Raises :class:`AddressInUse` naming the service and the address when another socket holds
    it, and :class:`ConfigurationError` when neither a port nor a path is set.
    """
    if path:
        return _bind_unix(name, path)
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
    return _listen(sock, sockaddr, name, address)


def _bind_unix(name: str, path: str) -> socket.socket:
    _remove_stale_unix_socket(name, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return _listen(sock, path, name, format_address(None, None, path))


def _listen(sock: socket.socket, sockaddr: Any, name: str, address: str) -> socket.socket:
    try:
        sock.bind(sockaddr)
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
