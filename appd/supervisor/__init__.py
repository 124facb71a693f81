"""The supervisor layer: runs services in processes of their own on the runtime's engine.

:mod:`appd.supervisor.supervisor` is the loop; :mod:`appd.supervisor.scoreboard` the shared
memory its processes report readiness and requests through.
"""

from __future__ import annotations

from appd.supervisor.supervisor import (
    ProcessState,
    Supervisor,
    status_path_for,
    write_json_atomically,
)

__all__ = ["ProcessState", "Supervisor", "status_path_for", "write_json_atomically"]
