"""The process runtime: daemons, workers, pid files, signals and restart policy.

Knows nothing of services, sockets or plugins; everything above it is built on it.
"""

from __future__ import annotations

from appd.runtime.quit import quit_requested, request_quit, sleep

__all__ = ["quit_requested", "request_quit", "sleep"]
