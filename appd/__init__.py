"""appd: app service daemons.

Small, supervised service processes that own a scarce resource, and a safe client that many web
workers use to call them over an authenticated, encrypted socket.
"""

from __future__ import annotations

from appd.discovery import DiscoveredService, discover_services
from appd.errors import (
    AddressInUse,
    AppdError,
    AuthenticationFailed,
    CapacityError,
    CapacityTimeout,
    CapacityUnavailable,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    DiscoveryError,
    DuplicateServiceError,
    EntryLoadError,
    PidFileLocked,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ServiceBusy,
    TransportError,
    UnknownCommand,
)
from appd.hooks import Hooks, get_plugin_manager, load_hooks
from appd.hookspecs import hookimpl
from appd.logging import configure_logging, get_logger
from appd.runtime import (
    DaemonRunStatus,
    RestartPolicy,
    WorkerStartInfo,
    quit_requested,
    sleep,
    start_daemon,
    start_workers,
)
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
    "CapacityError",
    "CapacityTimeout",
    "CapacityUnavailable",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "DaemonRunStatus",
    "DiscoveredService",
    "DiscoveryError",
    "DuplicateServiceError",
    "EntryLoadError",
    "Hooks",
    "PidFileLocked",
    "ProtocolError",
    "RemoteError",
    "Request",
    "RequestTimeout",
    "RestartPolicy",
    "SecureSocketAppClient",
    "SecureSocketAppService",
    "ServiceBusy",
    "TransportError",
    "UnknownCommand",
    "WorkerStartInfo",
    "__version__",
    "command",
    "configure_logging",
    "discover_services",
    "generate_key",
    "get_logger",
    "get_plugin_manager",
    "hookimpl",
    "load_hooks",
    "quit_requested",
    "sleep",
    "start_daemon",
    "start_workers",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("appd")
    raise AttributeError(f"module 'appd' has no attribute {name!r}")
