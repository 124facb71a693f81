"""Importing the client loads only what a client needs: web workers pay nothing for the
supervisor, the plugin manager, discovery or the runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Module prefixes a client import must not load.
HEAVY = (
    "pluggy",
    "importlib_metadata",
    "asyncio",
    "structlog",
    "appd.discovery",
    "appd.runtime",
    "appd.supervisor",
    "appd.hooks",
    "appd.cli",
    "appd.service",
    "appd.config",
)


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stdout))


def _heavy(modules: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        m
        for m in modules
        if any(m == h or m.startswith(h + ".") for h in HEAVY)
        and not any(m == a or m.startswith(a + ".") for a in allowed)
    ]


def test_importing_the_client_loads_nothing_heavy() -> None:
    modules = _loaded_after("from appd import SecureSocketAppClient")
    assert _heavy(modules) == []
    assert "appd.transport.client" in modules


def test_importing_the_errors_loads_nothing_heavy() -> None:
    modules = _loaded_after("import appd; appd.RemoteError; appd.AppdError")
    assert _heavy(modules) == []
    assert "appd.transport.client" not in modules


def test_the_async_client_needs_asyncio_and_nothing_else_heavy() -> None:
    modules = _loaded_after("from appd import AsyncSecureSocketAppClient")
    assert _heavy(modules, allowed=("asyncio",)) == []


@pytest.mark.parametrize("name", ["SecureSocketAppService", "start_daemon", "hookimpl"])
def test_other_names_still_resolve(name: str) -> None:
    import appd

    assert getattr(appd, name) is not None
