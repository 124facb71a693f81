"""What is wrong with a configuration and its services, found without starting anything.

``appd check`` prints these findings; Django's system checks (``manage.py check``) report the
same ones under their ids (:mod:`appd.contrib.django.checks`).  Every finding is a message, never
a raw traceback: an import error's traceback is kept apart, in :attr:`Finding.details`.
Nothing here binds a socket or starts a process.
"""

from __future__ import annotations

import difflib
import importlib
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

from appd.cli.app import ConfigSource, discover, load, prepare_services
from appd.config import AppdConfig, resolve_secret
from appd.discovery import DiscoveredService
from appd.errors import ConfigurationError, DiscoveryError, DuplicateServiceError
from appd.hooks import Hooks

__all__ = [
    "Diagnosis", "Finding", "Kind", "address_conflicts", "diagnose", "format_traceback",
    "listeners", "references",
]


class Kind(Enum):
    """What a :class:`Finding` is about."""

    #: The configuration's shape, a key or a value is wrong.
    CONFIGURATION = "configuration"
    #: A ``services.<name>`` table (or an ``enabled`` entry) names no discovered service.
    UNKNOWN_SERVICE = "unknown service"
    #: A services module (or entry point) cannot be imported.
    IMPORT = "import"
    #: Two different service classes have one name.
    DUPLICATE = "duplicate"
    #: An ``env:``/``file:`` reference that cannot be resolved here.
    SECRET = "secret"
    #: Two listeners (services, or an address a plugin declares) on one address.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Finding:
    """One problem: a one-line message, what to do about it, and any long details."""

    kind: Kind
    message: str
    hint: str | None = None
    #: A traceback, for an import error.
    details: str | None = None


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` found, and what it could build on the way.

    :ivar config: the configuration, with secrets resolved when every one could be (else
        left unread); None when it is malformed.
    :ivar services: the discovered services; None when discovery failed.
    """

    findings: list[Finding] = field(default_factory=list)
    config: AppdConfig | None = None
    hooks: Hooks | None = None
    services: list[DiscoveredService] | None = None


def references(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``env:``/``file:`` reference in a setting's value, with the key it sits at."""
    if isinstance(value, str) and value.startswith(("env:", "file:")):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, f"{where}.{key}")


def format_traceback(exc: BaseException) -> str:
    """``exc``'s traceback without the frames of the import machinery and of appd's discovery:
    what the reader needs is where their own code failed."""
    summary = traceback.TracebackException.from_exception(exc)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not _machinery(frame.filename)]
    )
    return "".join(summary.format()).rstrip()


#: Files whose frames an import error's traceback leaves out.
_MACHINERY: Final = (str(Path(importlib.__file__).parent), str(Path(__file__).parents[1]))


def _machinery(filename: str) -> bool:
    return filename.startswith("<frozen ") or filename.startswith(_MACHINERY)


def diagnose(
    config_path: str | None = None,
    *,
    source: ConfigSource | None = None,
    hooks: Hooks | None = None,
    skip_imports: bool = False,
) -> Diagnosis:
    """Read the configuration, discover the services and check that they fit together.

    :param source: as for :func:`appd.cli.app.load`.
    :param hooks: the invocation's plugin manager (built from the configuration when omitted).
    :param skip_imports: report no :attr:`Kind.IMPORT` finding (the caller reported those
        already, one per module); discovery-dependent checks are still skipped on failure.
    """
    result = Diagnosis()
    findings = result.findings
    try:
        config, hooks = load(config_path, source=source, hooks=hooks, secrets=False)
    except ConfigurationError as exc:
        findings.append(Finding(Kind.CONFIGURATION, str(exc)))
        return result
    result.config, result.hooks = config, hooks
    label = config.source or "configuration"

    written = [
        (f"{label}: services.{name}.{key}", value)
        for name, service_config in config.services.items()
        for key, value in service_config.settings.items()
    ] + [
        (f"{label}: capacities.{name}.backend", capacity.backend)
        for name, capacity in config.capacities.items()
    ]
    missing = False
    for place, value in written:
        for where, reference in references(value, place):
            try:
                resolve_secret(reference, where=where)
            except ConfigurationError as exc:
                missing = True
                findings.append(
                    Finding(
                        Kind.SECRET,
                        str(exc),
                        hint="set it where the services run (an error for deployment)",
                    )
                )

    try:
        found = discover(config, hooks)
    except DuplicateServiceError as exc:
        findings.append(
            Finding(
                Kind.DUPLICATE,
                exc.summary,
                hint='give one of the classes a name of its own: name = "..." in its body',
            )
        )
        return result
    except DiscoveryError as exc:
        if not skip_imports:
            cause = exc.__cause__
            findings.append(
                Finding(
                    Kind.IMPORT,
                    exc.summary,
                    details=format_traceback(cause) if cause is not None else exc.details,
                )
            )
        return result
    result.services = found

    names = sorted(f.name for f in found)
    for name in sorted(set(config.services) - set(names)):
        findings.append(
            Finding(
                Kind.UNKNOWN_SERVICE,
                f"{label}: services.{name}: no service named {name!r} was discovered",
                hint=_known(name, names),
            )
        )
    for name in sorted(set(config.enabled or ()) - set(names)):
        findings.append(
            Finding(
                Kind.UNKNOWN_SERVICE,
                f"{label}: enabled: no service named {name!r} was discovered",
                hint=_known(name, names),
            )
        )
    if any(f.kind is Kind.UNKNOWN_SERVICE for f in findings):
        return result

    if missing:
        return result  # the services' settings are validated with their secrets only
    try:
        config, hooks = load(config_path, source=source, hooks=hooks)
        result.config, result.hooks = config, hooks
        services = prepare_services(config, found)
    except ConfigurationError as exc:
        findings.append(Finding(Kind.CONFIGURATION, str(exc)))
        return result
    findings.extend(
        Finding(Kind.CONFLICT, message, hint="give each its own port (or path)")
        for message in address_conflicts(listeners(services, hooks))
    )
    return result


def listeners(services: Sequence[Any], hooks: Hooks | None) -> list[tuple[str, str]]:
    """``(owner, address)`` of everything this configuration listens on: each socket service
    (``service 'power'``) and each address a plugin declares (``appd_addresses``)."""
    found = [
        (f"service {service.name!r}", service.settings.address)
        for service in services
        if getattr(service, "settings", None) is not None
    ]
    if hooks is not None:
        found.extend(hooks.appd_addresses())
    return found


#: Hosts that listen on every interface: they clash with any host on the same port.
_WILDCARDS: Final = ("", "0.0.0.0", "::", "*")


def _endpoint(address: str) -> tuple[str, str, int] | None:
    """``("unix", path, 0)`` or ``("tcp", host, port)``; None for port 0 (any free one) or an
    address that does not parse."""
    if address.startswith("unix:"):
        return "unix", address[len("unix:"):], 0
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return None
    return "tcp", "127.0.0.1" if host == "localhost" else host, int(port)


def address_conflicts(found: Sequence[tuple[str, str]]) -> list[str]:
    """One message per pair of listeners that cannot both listen: the same Unix socket path,
    or one TCP port on the same host (or with either on every interface)."""
    messages = []
    parsed = [(owner, address, _endpoint(address)) for owner, address in found]
    for i, (owner, address, endpoint) in enumerate(parsed):
        if endpoint is None:
            continue
        for other, other_address, other_endpoint in parsed[i + 1:]:
            if other_endpoint is None or other_endpoint[0] != endpoint[0]:
                continue
            if endpoint[0] == "unix":
                clash = endpoint[1] == other_endpoint[1]
            else:
                clash = endpoint[2] == other_endpoint[2] and (
                    endpoint[1] == other_endpoint[1]
                    or endpoint[1] in _WILDCARDS or other_endpoint[1] in _WILDCARDS
                )
            if clash:
                where = address if address == other_address else f"{address} and {other_address}"
                messages.append(f"{owner} and {other} both listen on {where}")
    return messages


def _known(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean {close[0]!r}? (discovered: {', '.join(names)})"
    return f"discovered: {', '.join(names) or 'none'}"
