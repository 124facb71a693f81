"""The stress, chaos and fuzz suites: run with ``nox -s stress`` (or ``pytest tests/stress``).

They take minutes of CPU, so every test here is marked ``slow``: the default ``nox`` run (and a
plain ``pytest``) runs them beside the other tests, ``pytest -m "not slow"`` leaves them out, and
``nox -s stress`` runs them alone, printing the figures docs/reliability.md reports.  They reuse
the transport tests' service process and raw client (tests/integration/transport_service.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


sys.path.insert(0, str(HERE.parent / "integration"))

from transport_service import make_service, service  # noqa: E402, F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here is ``stress`` and ``slow`` (``-m "not slow"`` leaves the suites out of a
    quick run)."""
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.stress)
            item.add_marker(pytest.mark.slow)
