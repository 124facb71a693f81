"""A socket service's settings, validated once into one frozen object.

The values come from two places: the service class (attributes or properties, the seed's style)
and the service's ``[services.<name>]`` table of the configuration (``env:``/``file:``
references already resolved), the table winning.  :func:`build_socket_settings` reads them all
through the configuration's own :class:`~appd.config.SettingsReader`, so every error names
where the bad value came from and the key::

    appd.toml: services.power.concurrency: expected a positive integer, got 0
    shop.services.PowerService.concurrency: expected a positive integer, got 0

The defaults live in one place: :class:`~appd.transport.server.ServerSettings` (the class
attributes of ``SecureSocketAppService`` are read from it).  ``appd check``, the supervisor
before it forks and the service process all use the one object built here; secrets stay out of
its ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from appd.config import SettingsReader
from appd.errors import ConfigurationError
from appd.transport.crypto import key_bytes
from appd.transport.listen import checked_socket_mode, format_address
from appd.transport.server import ServerSettings

__all__ = ["SOCKET_SETTINGS", "SocketServiceSettings", "build_socket_settings"]

#: Every setting of a socket service (what its ``[services.<name>]`` table may hold, besides
#: the supervisor's own keys).
SOCKET_SETTINGS: Final = frozenset(
    {
        "host",
        "port",
        "path",
        "key",
        "username",
        "password",
        "users",
        "concurrency",
        "max_queue",
        "queue_timeout",
        "max_connections",
        "max_frame_size",
        "handshake_timeout",
        "idle_timeout",
        "request_timeout",
        "shutdown_grace",
        "frame_timeout",
        "write_timeout",
        "socket_mode",
    }
)

#: The smallest ``max_frame_size`` accepted: room for a handshake and a small request.
MIN_FRAME_SIZE: Final = 1024


@dataclass(frozen=True)
class SocketServiceSettings:
    """Where a socket service listens, and what its server runs with (validated).

    :ivar name: the service's name.
    :ivar host: TCP interface (ignored when ``path`` is set).
    :ivar port: TCP port; ``0`` picks a free one.
    :ivar path: Unix socket path, or ``None`` for TCP.
    :ivar server: the secrets and limits the server runs with.
    """

    name: str
    host: str | None
    port: int | None
    path: str | None
    server: ServerSettings

    @property
    def address(self) -> str:
        """``host:port`` or ``unix:path``, as logs and errors show it."""
        return format_address(self.host, self.port, self.path)


def build_socket_settings(
    name: str,
    values: Mapping[str, Any],
    *,
    source: str,
    prefix: str,
    origins: Mapping[str, str] | None = None,
) -> SocketServiceSettings:
    """Validate a socket service's settings.

    :param name: the service's name.
    :param values: every setting's value (the class's, overridden by the table's).
    :param source: where the table came from (``appd.toml``), for messages.
    :param prefix: the table's key prefix (``services.power.``), for messages.
    :param origins: per key, how to name a value that came from the class instead.
    :raises ConfigurationError: the first bad value, named; secrets are never echoed.
    """
    read = SettingsReader(values, source=source, prefix=prefix, origins=origins)
    default = ServerSettings(name=name, psk=b"", users={})
    host = read.optional_string("host")
    path = read.optional_string("path")
    port = values.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
    ):
        raise read.fail("port", f"expected a port number from 0 to 65535, got {port!r}")
    key = values.get("key")
    if key is None:
        raise read.fail("key", "the service has no key (`appd keygen` prints one)")
    try:
        psk = key_bytes(key)
    except ConfigurationError as exc:
        raise read.fail("key", str(exc)) from None
    users = _users(read, values)
    if path is None and port is None:
        raise read.fail("port", "neither a port nor a path to listen on is set")
    server = ServerSettings(
        name=name,
        psk=psk,
        users=users,
        concurrency=read.positive_integer("concurrency", default.concurrency),
        max_queue=read.integer("max_queue", default.max_queue, minimum=0),
        queue_timeout=read.seconds("queue_timeout", default.queue_timeout, optional=True),
        max_connections=read.positive_integer("max_connections", default.max_connections),
        max_frame_size=read.integer(
            "max_frame_size", default.max_frame_size, minimum=MIN_FRAME_SIZE
        ),
        handshake_timeout=_required(read.seconds("handshake_timeout", default.handshake_timeout)),
        idle_timeout=read.seconds("idle_timeout", default.idle_timeout, optional=True),
        request_timeout=read.seconds("request_timeout", default.request_timeout, optional=True),
        shutdown_grace=_required(
            read.seconds("shutdown_grace", default.shutdown_grace, positive=False)
        ),
        frame_timeout=_required(read.seconds("frame_timeout", default.frame_timeout)),
        write_timeout=_required(read.seconds("write_timeout", default.write_timeout)),
        socket_mode=_socket_mode(read, values.get("socket_mode", default.socket_mode)),
    )
    return SocketServiceSettings(name=name, host=host, port=port, path=path, server=server)


def _socket_mode(read: SettingsReader, mode: Any) -> int:
    try:
        return checked_socket_mode("", mode)
    except ConfigurationError:
        raise read.fail(
            "socket_mode", f"expected permission bits such as 0o600, got {mode!r}"
        ) from None


def _required(value: float | None) -> float:
    assert value is not None  # not optional: the reader raised instead
    return value


def _users(read: SettingsReader, values: Mapping[str, Any]) -> dict[str, str]:
    """``users`` merged with ``username``/``password``; checked, never echoed."""
    users: dict[str, str] = {}
    table = values.get("users")
    if table is not None:
        if not isinstance(table, Mapping) or not all(
            isinstance(u, str) and isinstance(p, str) for u, p in table.items()
        ):
            raise read.fail("users", "expected a table of user names to password strings")
        users.update(table)
    username, password = values.get("username"), values.get("password")
    if username is not None or password is not None:
        if not username or password is None:
            raise read.fail("username", "username and password must be set together")
        if not isinstance(username, str) or not isinstance(password, str):
            raise read.fail("password", "username and password must be strings")
        users[username] = password
    if not users:
        raise read.fail("users", "the service has no users: set username and password, or users")
    return users
