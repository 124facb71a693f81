"""The unit file ``appd systemd-unit`` prints: ``Type=notify``, watchdog, reload, hardening."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["render_unit"]

#: Sandboxing that costs an appd service nothing.  Devices stay visible (a service may own a
#: serial line); the file system is read-only but for the paths appd writes.
_HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "UMask=0027",
)


#: ``LimitNOFILE=``: room for every service's ``max_connections`` plus the handshakes in
#: progress (docs/security.md's checklist).
LIMIT_NOFILE = 65536


def _under_tmp(path: Path) -> bool:
    """True for a path under /tmp or /var/tmp, which ``PrivateTmp=yes`` would replace."""
    return any(path == Path(t) or Path(t) in path.parents for t in ("/tmp", "/var/tmp"))


def _quote(word: str) -> str:
    """A word as systemd's command-line and environment syntax reads it."""
    if word and all(c.isalnum() or c in "/._-+:=@,%" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    *,
    services: Sequence[str],
    exec_start: Sequence[str],
    working_directory: Path,
    config_file: Path | None,
    watchdog_sec: float,
    stop_timeout: float,
    writable_paths: Sequence[Path],
    user: str | None = None,
) -> str:
    """The text of a ``Type=notify`` service unit that runs ``exec_start`` (``appd run``).

    :param services: the names of the services it runs (for the description).
    :param exec_start: the command line of ``appd run``.
    :param working_directory: the supervisor's working directory (``run_dir``).
    :param config_file: the configuration file, passed as ``APPD_CONFIG`` (``None``: none).
    :param watchdog_sec: ``WatchdogSec=`` (``0`` turns the watchdog off).
    :param stop_timeout: ``TimeoutStopSec=``: longer than the longest drain.
    :param writable_paths: directories appd writes (pid, status and log files, Unix sockets).
    :param user: ``User=`` (``None``: root, or the user manager's own user).
    """
    command = " ".join(_quote(word) for word in exec_start)
    service_lines = [
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={command}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={_seconds(stop_timeout)}",
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={_seconds(watchdog_sec)}",
        f"WorkingDirectory={_quote(str(working_directory))}",
    ]
    if config_file is not None:
        service_lines.append(f"Environment={_quote('APPD_CONFIG=' + str(config_file))}")
    if user:
        service_lines.append(f"User={user}")
    service_lines.extend(_HARDENING)
    used = [working_directory, *writable_paths, *([config_file] if config_file else [])]
    if not any(_under_tmp(Path(path)) for path in used):
        # A private /tmp would hide paths under /tmp from the service: only without any.
        service_lines.append("PrivateTmp=yes")
    service_lines.extend((
        f"LimitNOFILE={LIMIT_NOFILE}",
        # Records go to the journal (service processes inherit its stream socket).
        "StandardOutput=journal",
        "StandardError=inherit",
    ))
    paths = sorted({str(p) for p in writable_paths})
    if paths:
        service_lines.append("ReadWritePaths=" + " ".join(_quote(p) for p in paths))
    described = ", ".join(services) if services else "none"
    lines = [
        f"# appd.service: written by `appd systemd-unit` ({shlex.join(exec_start)})",
        "[Unit]",
        f"Description=appd services: {described}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        *service_lines,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
