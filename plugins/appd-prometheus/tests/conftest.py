"""Fixtures for appd-prometheus's tests; the repository's helpers come from ``tests/support.py``
and the plugin is tested as installed (through its entry point)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2] / "tests"))

pytest_plugins = ["prometheus_fixtures"]
