"""``appd --version`` and ``manage.py appd --version`` print appd's version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytest.importorskip("django")

from django_project import make_project


def test_appd_version_prints_appds_version(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "appd", "--version"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"appd {version('appd')}"


def test_manage_py_appd_version_prints_appds_version(tmp_path: Path) -> None:
    project = make_project(tmp_path / "site")
    result = project.manage("appd", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"appd {version('appd')}"
