"""``-v 0..3`` and ``--log-level`` set the level of every process of ``appd run`` and
``manage.py appd run``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import descendants, kill_pids, wait_for

pytest.importorskip("django")

from django_project import DjangoProject, all_ready, make_project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    yield make_project(tmp_path / "site")
    kill_pids(set(descendants()) - before)


def _run(project: DjangoProject, argv: list[str], log: Path) -> list[dict[str, Any]]:
    """Run until every service is ready, stop with SIGTERM; the JSON records it wrote."""
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=project.root, env=project.env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: all_ready(project.status()) or proc.poll() is not None, timeout=30,
                 message="appd run ready")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def test_manage_py_appd_run_v0_writes_no_info_records(project: DjangoProject,
                                                      tmp_path: Path) -> None:
    default = _run(project, [sys.executable, "manage.py", "appd", "run"], tmp_path / "1.log")
    assert any(r.get("level") == "info" for r in default), default
    quiet = _run(project, [sys.executable, "manage.py", "appd", "run", "-v", "0"],
                 tmp_path / "0.log")
    assert not [r for r in quiet if r.get("level") in ("info", "debug")], quiet


def test_appd_run_log_level_and_verbosity(project: DjangoProject, tmp_path: Path) -> None:
    quiet = _run(project, [sys.executable, "-m", "appd", "run", "--log-level", "warning"],
                 tmp_path / "w.log")
    assert not [r for r in quiet if r.get("level") in ("info", "debug")], quiet
    quiet = _run(project, [sys.executable, "-m", "appd", "run", "-v", "0"], tmp_path / "v0.log")
    assert not [r for r in quiet if r.get("level") in ("info", "debug")], quiet
    loud = _run(project, [sys.executable, "-m", "appd", "run", "-v", "3"], tmp_path / "v3.log")
    assert any(r.get("level") == "info" for r in loud), loud
