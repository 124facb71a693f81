"""The stress, chaos and fuzz suites: run with ``nox -s stress`` (or ``pytest tests/stress``).

They take minutes of CPU, so every test here is marked ``slow``: the default ``nox`` run (and a
plain ``pytest``) runs them beside the other tests, ``pytest -m "not slow"`` leaves them out, and
``nox -s stress`` runs them alone, printing the figures docs/reliability.md reports.  They reuse
the transport tests' service process and raw client (tests/integration/conftest.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_integration_fixtures() -> object:
    spec = importlib.util.spec_from_file_location(
        "appd_transport_fixtures", HERE.parent / "integration" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_fixtures = _load_integration_fixtures()
make_service = _fixtures.make_service  # type: ignore[attr-defined]
service = _fixtures.service  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here is ``stress`` and ``slow`` (``-m "not slow"`` leaves the suites out of a
    quick run)."""
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.stress)
            item.add_marker(pytest.mark.slow)
