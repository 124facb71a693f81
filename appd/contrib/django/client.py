"""Clients for views and serializers: built from the settings, connected on first request.

``service_client("power")`` (or ``clients["power"]``, ``clients.power``) returns a
:class:`~appd.SecureSocketAppClient` for the service ``power``.  When
``settings.APPD["services"]["power"]`` says where it listens (``port``, with ``host`` or the
default ``127.0.0.1``; or ``path``) and how to call it (``key``, and ``username`` with
``password`` or ``users``), the client is built from those settings alone: no ``services.py``
is imported, so a web worker needs nothing but appd and the settings.  Only when the settings
do not say enough does the first call discover the services (importing every app's
``services.py``) and take the rest from the service's class.

Nothing happens at import or at Django start-up, and the client opens its connection on its
first request.  Each client is shared by the threads of a process and reopens its own
connection after a fork.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appd.errors import ConfigurationError, DiscoveryError

if TYPE_CHECKING:
    from appd.transport.client import SecureSocketAppClient

__all__ = [
    "ClientSettings",
    "Clients",
    "client_settings",
    "clients",
    "reset_clients",
    "service_client",
]

#: The host a client connects to when the settings give a ``port`` without a ``host``: the
#: default ``host`` of :class:`~appd.SecureSocketAppService`.
DEFAULT_HOST = "127.0.0.1"

_clients: dict[str, SecureSocketAppClient] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ClientSettings:
    """What a client of one service needs, as ``settings.APPD`` gives it (secrets resolved).

    ``repr`` never shows the key or the password.
    """

    name: str
    host: str | None
    port: int | None
    path: str | None
    username: str
    password: str
    key: str | bytes

    def __repr__(self) -> str:
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"<ClientSettings {self.name!r} {where} as {self.username!r}>"


def client_settings(name: str) -> ClientSettings | None:
    """The client settings of service ``name`` from ``settings.APPD`` alone, or None when the
    settings do not say enough (no address, no key, or no user).

    Reads ``settings.APPD["services"][name]`` only: other services' secrets are not needed.

    :raises ConfigurationError: a value is malformed, or an ``env:``/``file:`` reference
        cannot be resolved (the error names the setting, never the secret).
    """
    from django.conf import settings

    from appd.config import resolve_secret
    from appd.contrib.django.config import SOURCE

    appd_settings = getattr(settings, "APPD", None)
    if not isinstance(appd_settings, Mapping):
        return None
    services = appd_settings.get("services")
    table = services.get(name) if isinstance(services, Mapping) else None
    if not isinstance(table, Mapping):
        return None
    where = f"{SOURCE}: services.{name}"

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigurationError(
                f"{where}.{key}: expected a string, got {type(value).__name__}"
            )
        return resolve_secret(value, where=f"{where}.{key}")

    path, port = text("path"), table.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise ConfigurationError(f"{where}.port: expected an integer, got {port!r}")
    if not path and not port:
        return None
    key = text("key")
    username, password = text("username"), text("password")
    if username is None or password is None:
        users = table.get("users")
        if isinstance(users, Mapping) and users:
            username, raw = next(iter(users.items()))
            if not isinstance(raw, str):
                raise ConfigurationError(f"{where}.users.{username}: expected a string")
            password = resolve_secret(raw, where=f"{where}.users.{username}")
    if key is None or username is None or password is None:
        return None
    return ClientSettings(
        name=name,
        host=None if path else (text("host") or DEFAULT_HOST),
        port=None if path else port,
        path=path,
        username=username,
        password=password,
        key=key,
    )


def service_client(name: str, *, timeout: float = 30.0) -> SecureSocketAppClient:
    """The client of the socket service ``name``, one per process (created on first use).

    From ``settings.APPD`` alone when it says enough (see :func:`client_settings`), else from
    discovery with ``settings.APPD`` applied.

    :param timeout: seconds each request may take; used when the client is first created.
    :raises AppdError: no such service, or it is not a socket service, or it has no key or
        user to call it as; a malformed or unresolvable setting (ConfigurationError).
    """
    with _lock:
        client = _clients.get(name)
        if client is None:
            client = _clients[name] = _make_client(name, timeout)
        return client


def _make_client(name: str, timeout: float) -> SecureSocketAppClient:
    from appd.transport.client import SecureSocketAppClient

    found = client_settings(name)
    if found is not None:
        return SecureSocketAppClient(
            found.host,
            found.port,
            found.username,
            found.password,
            found.key,
            path=found.path,
            timeout=timeout,
        )
    from appd.cli.app import client_for, load
    from appd.contrib.django.config import django_config_source

    config, hooks = load(None, source=django_config_source())
    try:
        made: SecureSocketAppClient = client_for(config, hooks, name, timeout=timeout)
    except DiscoveryError as exc:
        # In a web worker the message stays one line; the traceback is the cause's.
        raise DiscoveryError(exc.summary) from exc.__cause__ or exc
    return made


def reset_clients() -> None:
    """Close and forget every client :func:`service_client` made (settings changed, tests)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class Clients:
    """The clients of the services: ``clients["power"]`` or ``clients.power`` is
    ``service_client("power")``.

    ``"power" in clients`` and iterating look at the services ``settings.APPD`` has a table for.
    """

    def __getitem__(self, name: str) -> SecureSocketAppClient:
        return service_client(name)

    def __getattr__(self, name: str) -> SecureSocketAppClient:
        if name.startswith("_"):
            raise AttributeError(name)
        return service_client(name)

    def __iter__(self) -> Iterator[str]:
        from django.conf import settings

        appd_settings: Any = getattr(settings, "APPD", None)
        services = appd_settings.get("services") if isinstance(appd_settings, Mapping) else None
        return iter(list(services) if isinstance(services, Mapping) else [])

    def __contains__(self, name: object) -> bool:
        return name in list(self)

    def __repr__(self) -> str:
        return f"<Clients {list(self)!r}>"


#: ``clients["power"]`` / ``clients.power``: :func:`service_client` as a mapping.
clients = Clients()
