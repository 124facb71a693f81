"""Outlet numbers: what the PDU and the power service both accept."""

from __future__ import annotations

from typing import Final

from appd_power.errors import InvalidOutlet

__all__ = ["OUTLETS", "check_outlet"]

#: Outlets on the simulated PDU, numbered from 1.
OUTLETS: Final = 8


def check_outlet(value: object, outlets: int = OUTLETS) -> int:
    """``value`` as an outlet number from 1 to ``outlets``; :class:`InvalidOutlet` otherwise.

    Accepts an int or a string of digits (``appd call power poweron 3`` may send either).
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= outlets:
        raise InvalidOutlet(f"outlet must be an integer from 1 to {outlets}, not {value!r}")
    return number
