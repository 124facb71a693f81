"""The aggregate watchdog: when to ping, and which service processes have stopped showing life.

systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) when the unit has ``WatchdogSec=``; the
service must send ``WATCHDOG=1`` at least that often.  appd pings every half of it, and only
while every ready service process has shown life within ``max_heartbeat_age`` seconds: its
``heartbeat_age`` in the supervisor's status, plus the time since that status was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["WATCHDOG_ENV", "silent_processes", "watchdog_interval"]

#: What systemd sets for a unit with ``WatchdogSec=``.
WATCHDOG_ENV: Final = ("WATCHDOG_USEC", "WATCHDOG_PID")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or ``None`` when the watchdog is not
    enabled for process ``pid`` (unset, or ``WATCHDOG_PID`` names another process).

    :raises ValueError: naming the variable when it is not a positive integer.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        if not owner.isdigit():
            raise ValueError(f"WATCHDOG_PID must be a process id, not {owner!r}")
        if int(owner) != pid:
            return None
    if not usec.isdigit() or int(usec) <= 0:
        raise ValueError(f"WATCHDOG_USEC must be a positive integer, not {usec!r}")
    return int(usec) / 2_000_000


def silent_processes(
    status: Mapping[str, Any], *, max_heartbeat_age: float, since_status: float
) -> list[str]:
    """The ready service processes (``name[worker]``) that have not shown life recently.

    :param status: the supervisor's status document.
    :param max_heartbeat_age: seconds of silence allowed.
    :param since_status: seconds since ``status`` was written (added to each age).
    """
    silent = []
    for name, service in sorted(status.get("services", {}).items()):
        for process in service.get("processes", ()):
            age = process.get("heartbeat_age")
            if process.get("state") != "ready" or process.get("pid") is None or age is None:
                continue
            if age + since_status > max_heartbeat_age:
                silent.append(f"{name}[{process.get('worker')}]")
    return silent
