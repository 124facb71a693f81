"""A reload applies every change of the configuration, from ``settings.APPD`` as from
``appd.toml`` (process count, address), or refuses it naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervision import KEY, Project, project_in
from support import descendants, free_port, kill_pids, wait_for

from appd import SecureSocketAppClient
from appd.errors import ConnectFailed

pytest.importorskip("django")

from django_project import KEY as DEVICE_KEY
from django_project import PASSWORD, DjangoProject, all_ready, make_project


def _pids(status: dict[str, Any], name: str) -> list[int]:
    return [p["pid"] for p in status["services"][name]["processes"] if p["pid"]]


def _answers(port: int, username: str, password: str, key: str) -> bool:
    try:
        with SecureSocketAppClient("127.0.0.1", port, username, password, key,
                                   connect_timeout=1, timeout=5) as client:
            client.call("pid")
        return True
    except ConnectFailed:
        return False


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    project = make_project(tmp_path / "site")
    project.add_settings('\nAPPD["services"]["device"]["processes"] = 2\n')
    started = project.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr
    try:
        yield project
    finally:
        project.manage("appd", "stop")
        kill_pids(set(descendants()) - before)


def test_settings_appd_processes_and_port_are_applied_by_manage_py_reload(
    site: DjangoProject,
) -> None:
    wait_for(lambda: all_ready(site.status()), message="appd ready")
    assert len(_pids(site.status(), "device")) == 2
    old_port, new_port = site.port, free_port()
    site.add_settings(
        f'\nAPPD["services"]["device"]["processes"] = 3\n'
        f'APPD["services"]["device"]["port"] = {new_port}\n'
    )
    reloaded = site.manage("appd", "reload", "--timeout", "30")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    wait_for(lambda: all_ready(site.status()) and len(_pids(site.status(), "device")) == 3,
             timeout=20, message="three device processes")
    assert _answers(new_port, "web", PASSWORD, DEVICE_KEY)
    wait_for(lambda: not _answers(old_port, "web", PASSWORD, DEVICE_KEY), timeout=10,
             message="the old port to be given up")


def test_a_setting_a_reload_cannot_apply_is_refused_naming_it(site: DjangoProject) -> None:
    wait_for(lambda: all_ready(site.status()), message="appd ready")
    site.add_settings('\nAPPD["log_file"] = "run/elsewhere.log"\n')
    reloaded = site.manage("appd", "reload", "--timeout", "30")
    assert reloaded.returncode != 0
    assert "log_file" in reloaded.stdout + reloaded.stderr
    assert "reloaded" not in reloaded.stdout
    status = site.status()
    assert status["reload_failures"] == 1 and "log_file" in status["last_reload_error"]


@pytest.fixture
def toml_project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        yield proj


def test_appd_toml_processes_and_port_are_applied_by_reload(toml_project: Project) -> None:
    project = toml_project
    project.write_config({"alpha": {"processes": 2}})
    project.run()
    old_port = project.port("alpha")
    new_port = free_port()
    project.ports["alpha"] = new_port
    project.write_config({"alpha": {"processes": 3}})
    reloaded = project.appd("reload", "--timeout", "30")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    wait_for(lambda: project.all_ready() and len(project.pids("alpha")) == 3, timeout=20,
             message="three alpha processes")
    assert _answers(new_port, "user", "user password", KEY)
    wait_for(lambda: not _answers(old_port, "user", "user password", KEY), timeout=10,
             message="the old port to be given up")
    # A moved log file: `appd reload` still finds the supervisor, which refuses it.
    toml = project.root / "appd.toml"
    toml.write_text(toml.read_text().replace('"run/appd.log"', '"run/other.log"'))
    refused = project.appd("reload", "--timeout", "30")
    assert refused.returncode != 0 and "log_file" in refused.stdout + refused.stderr
    # A moved run directory (so pid file): SIGHUP, as systemd's ExecReload sends it.
    project.write_config({"alpha": {"processes": 3}}, extra='run_dir = "elsewhere"')
    project.hup()
    wait_for(lambda: project.status().get("reload_failures") == 2, message="a refused reload")
    assert "run_dir" in project.status()["last_reload_error"]
    assert len(project.pids("alpha")) == 3
