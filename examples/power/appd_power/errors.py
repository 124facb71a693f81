"""The example's exceptions.

::

    PowerError
    ├── InvalidOutlet (also ValueError)   an outlet number outside 1..8, or not a number
    ├── PduError                          the PDU answered ``ERR ...`` to a command
    ├── PduUnavailable                    the PDU cannot be reached, or broke off
    │   └── PduBusy                       the PDU refused a session: all of them are in use
    └── PoolTimeout                       no PDU connection became free in time
"""

from __future__ import annotations

__all__ = ["InvalidOutlet", "PduBusy", "PduError", "PduUnavailable", "PoolTimeout", "PowerError"]


class PowerError(Exception):
    """Root of the power example's exceptions."""


class InvalidOutlet(PowerError, ValueError):
    """An outlet number that is not an integer from 1 to the PDU's outlet count."""


class PduError(PowerError):
    """The PDU refused a command (it answered ``ERR ...``); the connection is still good."""


class PduUnavailable(PowerError):
    """The PDU could not be reached, was full (``ERR busy``), or closed the connection."""


class PduBusy(PduUnavailable):
    """The PDU answered ``ERR busy``: it already serves as many sessions as it takes."""


class PoolTimeout(PowerError):
    """Every pooled PDU connection stayed in use for longer than the pool's timeout."""
