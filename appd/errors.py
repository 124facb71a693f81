"""appd's exceptions: one tree under :class:`AppdError`.

Every message names what happened and where; none ever contains a key or a password.

::

    AppdError
    ├── ConfigurationError      a setting is missing, malformed or contradictory
    ├── DiscoveryError          a service or plugin module could not be found or imported
    │   └── DuplicateServiceError   two services claim one name
    ├── EntryLoadError          a "module:function" entry could not be imported or is not callable
    └── PidFileLocked           a live process holds the pid file's lock (carries its ``pid``)
"""

from __future__ import annotations

__all__ = [
    "AppdError",
    "ConfigurationError",
    "DiscoveryError",
    "DuplicateServiceError",
    "EntryLoadError",
    "PidFileLocked",
]


class AppdError(Exception):
    """Base of every exception appd raises on purpose."""


class ConfigurationError(AppdError):
    """A configuration value is missing, malformed or contradictory."""


class DiscoveryError(AppdError):
    """A service module, class or entry point could not be found or imported."""


class DuplicateServiceError(DiscoveryError):
    """Two services have the same name; the message names both sources."""


class EntryLoadError(AppdError):
    """A ``"module:function"`` entry names a module that fails to import, or no callable."""


class PidFileLocked(AppdError):
    """A live process holds the lock of a pid file, so this process may not take it.

    :param path: the pid file.
    :param pid: the pid written by the live holder, or None when it could not be read in time.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        #: The pid of the live process holding the lock (None when the file gave none in time).
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"pid file {path!r} is locked by {holder}, which is still running")
