"""The stress, chaos and fuzz suites: run with ``nox -s stress`` (or ``pytest tests/stress``).

They take minutes, not seconds, so a plain ``pytest`` (whose test paths include this directory)
skips them unless they are asked for by path or with ``APPD_STRESS=1``.  They reuse the
transport tests' service process and raw client (tests/integration/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
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


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get("APPD_STRESS") == "1":
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="stress suite: run `nox -s stress` or `pytest tests/stress`")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
