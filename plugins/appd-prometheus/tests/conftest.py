"""Fixtures for appd-prometheus's tests; the repository's helpers come from ``tests/support.py``
and the plugin is tested as installed (through its entry point)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2] / "tests"))

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from prometheus_fixtures import SERVICES_PY, Project  # noqa: E402
from support import descendants, free_port, kill_pids  # noqa: E402


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    before = set(descendants())
    (tmp_path / "services.py").write_text(SERVICES_PY)
    proj = Project(tmp_path, free_port(), free_port())
    proj.write_config()
    try:
        yield proj
    finally:
        for proc in proj.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kill_pids(set(descendants()) - before)
