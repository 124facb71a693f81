"""appd: app service daemons.

Small, supervised service processes that own a scarce resource, and a safe client that many web
workers use to call them over an authenticated, encrypted socket.

Every public name resolves lazily (PEP 562): ``from appd import SecureSocketAppClient`` imports
the client and what it needs (msgpack, pycryptodome), never the plugin manager, discovery, the
runtime or the supervisor, so a web worker starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from appd.discovery import (
        DiscoveredService,
        discover_services,
    )
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
        DeadlineExceeded,
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
    from appd.hooks.manager import (
        Hooks,
        get_plugin_manager,
        load_hooks,
    )
    from appd.hookspecs import hookimpl
    from appd.logging import (
        configure_logging,
        get_logger,
    )
    from appd.runtime.daemon import (
        DaemonRunStatus,
        start_daemon,
    )
    from appd.runtime.quit import (
        quit_requested,
        sleep,
    )
    from appd.runtime.restart import RestartPolicy
    from appd.runtime.workers import (
        WorkerStartInfo,
        start_workers,
    )
    from appd.scope import (
        current_request_id,
        deadline,
        new_request_id,
        request_id,
        time_remaining,
    )
    from appd.service.base import AppServiceBase
    from appd.service.secure_socket import (
        SecureSocketAppService,
        command,
    )
    from appd.transport.aioclient import AsyncSecureSocketAppClient
    from appd.transport.client import SecureSocketAppClient
    from appd.transport.crypto import generate_key
    from appd.transport.request import Request

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
    "DeadlineExceeded",
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
    "current_request_id",
    "deadline",
    "discover_services",
    "generate_key",
    "get_logger",
    "get_plugin_manager",
    "hookimpl",
    "load_hooks",
    "new_request_id",
    "quit_requested",
    "request_id",
    "sleep",
    "start_daemon",
    "start_workers",
    "time_remaining",
]

#: Where each public name lives; imported on first access.
_EXPORTS: Final[dict[str, str]] = {
    "AddressInUse": "appd.errors",
    "AppServiceBase": "appd.service.base",
    "AppdError": "appd.errors",
    "AsyncSecureSocketAppClient": "appd.transport.aioclient",
    "AuthenticationFailed": "appd.errors",
    "CapacityError": "appd.errors",
    "CapacityTimeout": "appd.errors",
    "CapacityUnavailable": "appd.errors",
    "ConfigurationError": "appd.errors",
    "ConnectFailed": "appd.errors",
    "ConnectionLost": "appd.errors",
    "DaemonRunStatus": "appd.runtime.daemon",
    "DeadlineExceeded": "appd.errors",
    "DiscoveredService": "appd.discovery",
    "DiscoveryError": "appd.errors",
    "DuplicateServiceError": "appd.errors",
    "EntryLoadError": "appd.errors",
    "Hooks": "appd.hooks.manager",
    "PidFileLocked": "appd.errors",
    "ProtocolError": "appd.errors",
    "RemoteError": "appd.errors",
    "Request": "appd.transport.request",
    "RequestTimeout": "appd.errors",
    "RestartPolicy": "appd.runtime.restart",
    "SecureSocketAppClient": "appd.transport.client",
    "SecureSocketAppService": "appd.service.secure_socket",
    "ServiceBusy": "appd.errors",
    "TransportError": "appd.errors",
    "UnknownCommand": "appd.errors",
    "WorkerStartInfo": "appd.runtime.workers",
    "command": "appd.service.secure_socket",
    "configure_logging": "appd.logging",
    "current_request_id": "appd.scope",
    "deadline": "appd.scope",
    "discover_services": "appd.discovery",
    "generate_key": "appd.transport.crypto",
    "get_logger": "appd.logging",
    "get_plugin_manager": "appd.hooks.manager",
    "hookimpl": "appd.hookspecs",
    "load_hooks": "appd.hooks.manager",
    "new_request_id": "appd.scope",
    "quit_requested": "appd.runtime.quit",
    "request_id": "appd.scope",
    "sleep": "appd.runtime.quit",
    "start_daemon": "appd.runtime.daemon",
    "start_workers": "appd.runtime.workers",
    "time_remaining": "appd.scope",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("appd")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'appd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
