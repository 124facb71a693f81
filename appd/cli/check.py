"""``appd check``: the configuration, discovery, every service's settings, keys, addresses and
capacities, checked without starting anything.

The problems of the configuration and of discovery come from :mod:`appd.cli.diagnosis` (shared
with Django's system checks); this module adds what only a check of the running conditions
can tell: whether each address is free, whether each key looks generated, whether each
capacity's backend answers.
"""

from __future__ import annotations

import socket
from pathlib import Path

from appd.capacity import open_backend
from appd.cli.app import RECOMMENDED_KEY_BYTES, configure_service, is_enabled
from appd.cli.diagnosis import diagnose
from appd.errors import AddressInUse, AppdError, ConfigurationError
from appd.hooks import Hooks
from appd.runtime.pidfile import read_live_pid
from appd.service import SecureSocketAppService
from appd.transport.crypto import human_key_reason

__all__ = ["check"]


def check(
    config_path: str | None, *, hooks: Hooks | None = None
) -> tuple[list[str], list[str], list[str]]:
    """``appd check``: problems, passed checks and warnings (worth fixing, not failing the
    check), without starting anything.

    The configuration, discovery and the services' settings are checked first
    (:func:`appd.cli.diagnosis.diagnose`: each problem a message, never a traceback); when they
    are sound, each socket service's key, whether its address is free, and each capacity.

    :param hooks: the invocation's plugin manager (built here when omitted).
    :raises ConfigurationError: the configuration cannot be read at all.
    """
    diagnosis = diagnose(config_path, hooks=hooks)
    problems = [finding.message for finding in diagnosis.findings]
    warnings: list[str] = []
    config, found = diagnosis.config, diagnosis.services
    if config is None:
        # A configuration that cannot be read is an error, as for every other command.
        raise ConfigurationError(problems[0])
    notes = [f"configuration: {config.source or 'defaults (no configuration file)'}"]
    if found is None or problems:
        return problems, notes, warnings
    notes.append(f"discovery: {len(found)} service(s): {', '.join(f.name for f in found) or '-'}")
    # On a running site the addresses its own supervisor holds are in use, and rightly so.
    running = read_live_pid(config.pid_file)
    ours = f"in use by this appd (pid {running})"
    for item in found:
        if not is_enabled(config, item.name):
            continue
        service = item.cls()
        try:
            configure_service(service, config)
        except ConfigurationError as exc:
            problems.append(str(exc))
            continue
        if not isinstance(service, SecureSocketAppService) or service.settings is None:
            continue
        size = len(service.settings.server.psk)
        if size < RECOMMENDED_KEY_BYTES:
            problems.append(
                f"service {service.name}: key is {size} bytes; use at least "
                f"{RECOMMENDED_KEY_BYTES} (appd keygen)"
            )
        elif (reason := human_key_reason(service.settings.server.psk)) is not None:
            warnings.append(
                f"service {service.name}: key looks chosen by a person ({reason}); a recorded "
                "handshake lets it be guessed offline: use a generated one (appd keygen)"
            )
        try:
            listener = service.bind()
        except AddressInUse as exc:
            if running is not None:
                notes.append(f"service {service.name}: {service.settings.address} {ours}")
            else:
                problems.append(str(exc))
        except AppdError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"service {service.name}: cannot listen: {exc.strerror}")
        else:
            listener.close()
            if service.path:
                Path(service.path).unlink(missing_ok=True)
            notes.append(f"service {service.name}: address free")
    for owner, address in (diagnosis.hooks.appd_addresses() if diagnosis.hooks else []):
        problem = _address_problem(address)
        if problem is None:
            notes.append(f"{owner}: {address}: address free")
        elif problem == "address already in use" and running is not None:
            notes.append(f"{owner}: {address} {ours}")
        else:
            problems.append(f"{owner} cannot listen on {address}: {problem}")
    for name, capacity in sorted(config.capacities.items()):
        try:
            backend = open_backend(capacity)
            try:
                backend.check()
            finally:
                backend.close()
        except AppdError as exc:
            problems.append(str(exc))
        else:
            what = "slot directory usable" if capacity.is_local else "Redis answers"
            notes.append(f"capacity {name}: {backend.label}: {what}")
    return problems, notes, warnings


def _address_problem(address: str) -> str | None:
    """Why a TCP ``HOST:PORT`` a plugin declares cannot be listened on (None: it can; a Unix
    path or port 0 is not tried)."""
    host, _, port = address.rpartition(":")
    if address.startswith("unix:") or not port.isdigit() or int(port) == 0:
        return None
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            sock.listen(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
