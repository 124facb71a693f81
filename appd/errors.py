"""appd's exceptions: one tree under :class:`AppdError`.

Every message names what happened and where; none ever contains a key or a password.

::

    AppdError
    ├── ConfigurationError      a setting is missing, malformed or contradictory
    └── DiscoveryError          a service or plugin module could not be found or imported
        └── DuplicateServiceError   two services claim one name
"""

from __future__ import annotations

__all__ = ["AppdError", "ConfigurationError", "DiscoveryError", "DuplicateServiceError"]


class AppdError(Exception):
    """Base of every exception appd raises on purpose."""


class ConfigurationError(AppdError):
    """A configuration value is missing, malformed or contradictory."""


class DiscoveryError(AppdError):
    """A service module, class or entry point could not be found or imported."""


class DuplicateServiceError(DiscoveryError):
    """Two services have the same name; the message names both sources."""
