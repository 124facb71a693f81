"""The power example (examples/power, the ``appd-power-plugin`` distribution), installed for
real for one test module at a time, so no other test discovers its ``power`` and ``pdu``."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import build_wheel, installed_wheel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "power"
DIST = "appd-power-plugin"
PACKAGE = "appd_power"


@contextlib.contextmanager
def power_example_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build the example's wheel (from a copy: the checkout stays clean), install it for the
    ``with`` block, uninstall it afterwards."""
    source = tmp_path_factory.mktemp("power-source") / "power"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    wheel = build_wheel(source, tmp_path_factory.mktemp("power-wheel"))
    with installed_wheel(wheel, DIST, PACKAGE):
        yield
