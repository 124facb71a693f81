"""Fixtures for appd-systemd's tests: a real notification socket, and appd run as a user runs it.

The repository's test helpers (polling with deadlines, process clean-up) are shared from
``tests/support.py``; the plugin is tested as installed (through its entry point).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_TESTS = HERE.parents[2] / "tests"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_TESTS))

pytest_plugins = ["systemd_fixtures"]
