"""Named capacities: at most N holders of a scarce resource across processes and hosts.

A layer of its own (below services): it imports only errors, logging and configuration.
:class:`Capacity` waits for and hands out :class:`Lease` objects over a backend: local
``flock``ed slot files (:mod:`appd.capacity.local`), or Redis (:mod:`appd.capacity.redis_backend`,
which needs redis-py).  docs/capacity.md states the guarantees and their limits.
"""

from __future__ import annotations

from appd.capacity.backend import Backend, CapacityStatus, Grant, HolderInfo
from appd.capacity.capacity import Acquire, Capacities, Capacity, open_backend
from appd.capacity.lease import Lease

__all__ = [
    "Acquire",
    "Backend",
    "Capacities",
    "Capacity",
    "CapacityStatus",
    "Grant",
    "HolderInfo",
    "Lease",
    "open_backend",
]
