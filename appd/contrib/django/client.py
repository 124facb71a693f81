"""Clients for views and serializers: built on first use, connected on first request.

``service_client("power")`` finds the service ``power`` (discovery, with ``settings.APPD``
applied) and returns a :class:`~appd.SecureSocketAppClient` for its address and credentials.
Nothing happens at import or at Django start-up: the first call of ``service_client`` imports
the services modules, and the client opens its connection on its first request.  The client
is shared by the threads of a process and reopens its own connection after a fork.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appd.service import SecureSocketAppClient

__all__ = ["reset_clients", "service_client"]

_clients: dict[str, SecureSocketAppClient] = {}
_lock = threading.Lock()


def service_client(name: str, *, timeout: float = 30.0) -> SecureSocketAppClient:
    """The client of the socket service ``name``, one per process (created on first use).

    :param timeout: seconds each request may take; used when the client is first created.
    :raises AppdError: no such service, or it is not a socket service, or it has no key or
        user to call it as.
    """
    with _lock:
        client = _clients.get(name)
        if client is None:
            from appd.cli.app import client_for, load
            from appd.contrib.django.config import django_config_source

            config, hooks = load(None, source=django_config_source())
            made: SecureSocketAppClient = client_for(config, hooks, name, timeout=timeout)
            _clients[name] = client = made
        return client


def reset_clients() -> None:
    """Close and forget every client :func:`service_client` made (settings changed, tests)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
