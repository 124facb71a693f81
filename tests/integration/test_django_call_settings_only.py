"""``manage.py appd call`` needs only the settings: another app's broken ``services.py`` does
not stop it (as it does not stop a web worker's ``service_client``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import descendants, kill_pids, wait_for

pytest.importorskip("django")

from django_project import DjangoProject, all_ready, make_project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    yield make_project(tmp_path / "site")
    kill_pids(set(descendants()) - before)


def test_call_works_with_another_apps_services_py_broken(project: DjangoProject) -> None:
    started = project.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr
    try:
        wait_for(lambda: all_ready(project.status()), message="appd ready")
        made = project.manage("startapp", "printers")
        assert made.returncode == 0, made.stderr
        project.write("printers/services.py", "import a_driver_this_host_lacks\n")
        project.add_settings('\nINSTALLED_APPS += ["printers"]\n')
        result = project.manage("appd", "call", "device", "ping")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"args": ["pong"], "kwargs": {}}
    finally:
        project.manage("appd", "stop")
