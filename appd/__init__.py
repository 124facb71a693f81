"""appd: app service daemons.

Small, supervised service processes that own a scarce resource, and a safe client that many web
workers use to call them over an authenticated, encrypted socket.
"""

from __future__ import annotations

from appd.errors import (
    AddressInUse,
    AppdError,
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    DiscoveryError,
    DuplicateServiceError,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ServiceBusy,
    TransportError,
    UnknownCommand,
)
from appd.logging import configure_logging, get_logger
from appd.runtime import quit_requested, sleep
from appd.service import (
    AppServiceBase,
    SecureSocketAppClient,
    SecureSocketAppService,
    command,
)
from appd.transport.aioclient import AsyncSecureSocketAppClient
from appd.transport.crypto import generate_key
from appd.transport.server import Request

__all__ = [
    "AddressInUse",
    "AppServiceBase",
    "AppdError",
    "AsyncSecureSocketAppClient",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "DiscoveryError",
    "DuplicateServiceError",
    "ProtocolError",
    "RemoteError",
    "Request",
    "RequestTimeout",
    "SecureSocketAppClient",
    "SecureSocketAppService",
    "ServiceBusy",
    "TransportError",
    "UnknownCommand",
    "__version__",
    "command",
    "configure_logging",
    "generate_key",
    "get_logger",
    "quit_requested",
    "sleep",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("appd")
    raise AttributeError(f"module 'appd' has no attribute {name!r}")
