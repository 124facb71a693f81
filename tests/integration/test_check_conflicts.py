"""``appd check`` catches two listeners on one address (naming both) and knows its own running
site: the addresses its supervisor holds are "in use by this appd", not problems."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from supervision import Project, project_in


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        yield proj


def test_two_services_on_one_address_fail_the_check_naming_both(project: Project) -> None:
    port = project.port("alpha")
    project.write_config({"alpha": {}, "beta": {"port": port}})
    result = project.appd("check")
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    [line] = [line for line in output.splitlines() if "both listen on" in line]
    assert "service 'alpha'" in line and "service 'beta'" in line and str(port) in line


def test_a_service_on_the_prometheus_port_fails_the_check(project: Project) -> None:
    pytest.importorskip("appd_prometheus")
    port = project.port("alpha")
    project.write_config({"alpha": {}}, extra=f"[prometheus]\nport = {port}\n")
    result = project.appd("check")
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    [line] = [line for line in output.splitlines() if "both listen on" in line]
    assert "service 'alpha'" in line and "prometheus endpoint" in line


def test_a_check_on_the_running_site_passes(project: Project) -> None:
    project.write_config({"alpha": {}, "beta": {}})
    project.run()
    result = project.appd("check")
    assert result.returncode == 0, result.stdout + result.stderr
    pid = project.proc.pid if project.proc else None
    ours = [line for line in result.stdout.splitlines() if "in use by this appd" in line]
    assert len(ours) == 2, result.stdout
    assert all(f"(pid {pid})" in line for line in ours), result.stdout
    assert "problem" not in result.stdout


def test_django_checks_name_both_services_on_one_address(tmp_path: Path) -> None:
    pytest.importorskip("django")
    from django_project import make_project

    site = make_project(tmp_path / "site")
    services = site.root / "devices" / "services.py"
    services.write_text(services.read_text() + (
        "\n\nclass SensorService(DeviceService):\n    pass\n"
    ))
    site.add_settings(
        f'\nAPPD["services"]["sensor"] = dict(APPD["services"]["device"], port={site.port})\n'
    )
    result = site.manage("check")
    assert result.returncode != 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "appd.E008" in output, output
    assert "service 'device'" in output and "service 'sensor'" in output, output
