"""The supervisor layer: runs services in processes of their own on the runtime's engine.

:mod:`appd.supervisor.supervisor` is the loop; :mod:`appd.supervisor.scoreboard` the shared
memory its processes report readiness, requests, heartbeats and connections through;
:mod:`appd.supervisor.child` what a service process does once it knows its service.
"""

from __future__ import annotations

from appd.supervisor.supervisor import (
    ChildSpec,
    Plan,
    ProcessState,
    Supervisor,
    read_status,
    status_path_for,
    write_json_atomically,
)

__all__ = [
    "ChildSpec",
    "Plan",
    "ProcessState",
    "Supervisor",
    "read_status",
    "status_path_for",
    "write_json_atomically",
]
