"""The secure socket: wire protocol v2 (sans I/O), its cryptography, the server and clients.

Knows nothing of plugins or the supervisor.
"""

from __future__ import annotations
