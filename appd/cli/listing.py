"""What ``appd list`` and ``appd plugins`` show, as data for the command line to print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from appd.discovery import DiscoveredService, class_path
from appd.hooks import AppdPluginManager, PluginFailure
from appd.transport.listen import format_address

__all__ = [
    "PluginInfo",
    "PluginReport",
    "ServiceListing",
    "list_plugins",
    "list_services",
    "service_address",
]


@dataclass(frozen=True, slots=True)
class ServiceListing:
    """One line of ``appd list``."""

    #: The service's name.
    name: str
    #: Dotted path of its class, e.g. ``"shop.services.PowerService"``.
    class_path: str
    #: Where it was discovered, e.g. ``"entry point appd-power-plugin:power"``.
    source: str
    #: ``"host:port"`` or ``"unix:/path"``; ``None`` for a service that listens nowhere.
    address: str | None
    #: Why the address could not be read, when it could not.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A loaded plugin and the hooks it implements."""

    #: The name it is registered under.
    name: str
    #: Where it came from: ``"builtin"``, ``"entry point dist:name"``, ...
    source: str
    #: The hooks it implements, sorted.
    hooks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PluginReport:
    """Everything ``appd plugins`` shows."""

    loaded: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    disabled: tuple[str, ...] = ()


def _format_address(host: object, port: object, path: object) -> str | None:
    if not path and (host is None or port is None):
        return None
    return format_address(
        None if host is None else str(host), cast("int | None", port), str(path) if path else None
    )


def service_address(cls: type, settings: Mapping[str, Any] | None = None) -> str | None:
    """Where a service of class ``cls`` listens, from its ``host``/``port`` or ``path``.

    ``settings`` (the service's configuration table) override the class's own attributes.
    The class is instantiated to read properties; a service opens nothing in ``__init__``.
    """
    overrides = dict(settings or {})
    needed = [key for key in ("host", "port", "path") if key not in overrides]
    values: dict[str, object] = {key: overrides.get(key) for key in ("host", "port", "path")}
    if needed and any(hasattr(cls, key) for key in needed):
        instance = cls()
        for key in needed:
            values[key] = getattr(instance, key, None)
    return _format_address(values["host"], values["port"], values["path"])


def list_services(
    services: Sequence[DiscoveredService],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ServiceListing]:
    """One :class:`ServiceListing` per service, sorted by name.

    :param services: what :func:`appd.discovery.discover_services` found.
    :param settings: per-service configuration tables by service name (override attributes).
    """
    rows = []
    for found in sorted(services, key=lambda s: s.name):
        address: str | None = None
        problem: str | None = None
        try:
            address = service_address(found.cls, (settings or {}).get(found.name))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        rows.append(
            ServiceListing(
                name=found.name,
                class_path=class_path(found.cls),
                source=found.source,
                address=address,
                problem=problem,
            )
        )
    return rows


def list_plugins(pm: AppdPluginManager) -> PluginReport:
    """The loaded plugins with their hooks, the failures and the disabled names."""
    loaded = [
        PluginInfo(
            name=name,
            source=pm.sources.get(name, "registered by the caller"),
            hooks=tuple(sorted({caller.name for caller in pm.get_hookcallers(plugin) or []})),
        )
        for name, plugin in pm.list_name_plugin()
        if plugin is not None
    ]
    return PluginReport(loaded=loaded, failures=list(pm.failures), disabled=pm.disabled)
