"""appd's Django system checks in a real project: ``manage.py check`` names each problem by id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django_project import DjangoProject, make_project

pytest.importorskip("django")


@pytest.fixture
def project(tmp_path: Path) -> DjangoProject:
    return make_project(tmp_path / "site")


def output(done: object) -> str:
    return f"{done.stdout}{done.stderr}"  # type: ignore[attr-defined]


def test_a_correct_project_reports_no_issue(project: DjangoProject) -> None:
    done = project.manage("check")
    assert done.returncode == 0, output(done)
    assert "System check identified no issues" in done.stdout
    deploy = project.manage("check", "--deploy", "--tag", "appd")
    assert deploy.returncode == 0, output(deploy)
    assert "appd." not in output(deploy)
    # Registering the checks at start-up imported no services.py.
    shell = project.manage(
        "shell", "-c", "import sys; print('devices.services' in sys.modules)"
    )
    assert shell.stdout.split()[-1:] == ["False"], shell.stderr


def malformed_value(project: DjangoProject) -> None:
    project.add_settings('\nAPPD["shutdown_grace"] = "soon"\n')


def not_a_dict(project: DjangoProject) -> None:
    project.add_settings('\nAPPD = ["not", "a", "dict"]\n')


def unknown_key(project: DjangoProject) -> None:
    project.add_settings('\nAPPD["pidfile"] = "x.pid"\n')


def unknown_service_setting(project: DjangoProject) -> None:
    project.add_settings('\nAPPD["services"]["device"]["colour"] = "red"\n')


def bad_service_value(project: DjangoProject) -> None:
    project.add_settings('\nAPPD["services"]["device"]["concurrency"] = 0\n')


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (malformed_value, "settings.APPD: shutdown_grace: expected a number, got str 'soon'"),
        (not_a_dict, "settings.APPD: expected a dict of settings, got list"),
        (unknown_key, "settings.APPD: pidfile: unknown setting"),
        (unknown_service_setting, "'colour'"),
        (bad_service_value, "concurrency"),
    ],
)
def test_a_malformed_appd_setting_is_e001(
    project: DjangoProject, breakage: Callable[[DjangoProject], None], expected: str
) -> None:
    breakage(project)
    done = project.manage("check")
    assert done.returncode == 1
    assert "(appd.E001)" in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in output(done)


def test_a_section_for_no_service_is_e002_with_the_likely_name(project: DjangoProject) -> None:
    project.add_settings('\nAPPD["services"]["devise"] = {"port": 9}\n')
    done = project.manage("check")
    assert done.returncode == 1
    assert (
        "(appd.E002) settings.APPD: services.devise: no service named 'devise' was discovered"
    ) in done.stderr
    assert "did you mean 'device'?" in done.stderr
    # appd check says the same, as a message.
    checked = project.manage("appd", "check")
    assert checked.returncode == 1
    assert "problem: settings.APPD: services.devise: no service named 'devise'" in (
        checked.stdout
    )


def test_a_broken_services_py_is_e003_naming_the_app(project: DjangoProject) -> None:
    project.write("devices/services.py", "import appd\nimport pdu_driver_that_is_missing\n")
    done = project.manage("check")
    assert done.returncode == 1
    assert (
        "devices: (appd.E003) cannot import services.py of Django app 'devices' "
        "(module devices.services): ModuleNotFoundError: "
        "No module named 'pdu_driver_that_is_missing'"
    ) in done.stderr
    # The traceback is in the hint, not in the message.
    assert 'devices/services.py", line 2, in <module>' in done.stderr
    assert done.stderr.count("(appd.E003)") == 1

    checked = project.manage("appd", "check")
    assert checked.returncode == 1
    assert "problem: cannot import services.py of Django app 'devices'" in checked.stdout
    assert "Traceback" not in output(checked)


def test_two_services_with_one_name_is_e004_with_the_hint_to_set_name(
    project: DjangoProject,
) -> None:
    created = project.manage("startapp", "sensors")
    assert created.returncode == 0, created.stderr
    project.write(
        "sensors/services.py",
        """
        from appd import SecureSocketAppService

        class DeviceService(SecureSocketAppService):
            port = 0
        """,
    )
    project.add_settings('\nINSTALLED_APPS += ["sensors"]\n')
    done = project.manage("check")
    assert done.returncode == 1
    assert "(appd.E004) two services are named 'device'" in done.stderr
    assert 'name = "..."' in done.stderr


def test_a_missing_secret_warns_at_check_and_fails_deploy(project: DjangoProject) -> None:
    env = {k: v for k, v in project.env.items() if k != "DEVICE_KEY"}
    project.env = env
    done = project.manage("check")
    assert done.returncode == 0, output(done)
    assert (
        "(appd.W005) settings.APPD: services.device.key: "
        "environment variable 'DEVICE_KEY' is not set"
    ) in output(done)
    deploy = project.manage("check", "--deploy")
    assert deploy.returncode == 1
    assert "(appd.E005) settings.APPD: services.device.key" in deploy.stderr
    # Running needs the secret: an error naming the setting.
    run = project.manage("appd", "run", timeout=30)
    assert run.returncode == 1
    assert "settings.APPD: services.device.key: environment variable 'DEVICE_KEY'" in run.stderr


def test_a_literal_secret_with_debug_off_is_w006(project: DjangoProject) -> None:
    project.add_settings(
        '\nDEBUG = False\nAPPD["services"]["device"]["password"] = "hunter2 literally"\n'
    )
    done = project.manage("check")
    assert done.returncode == 0, output(done)
    assert "(appd.W006) settings.APPD: services.device.password" in output(done)
    assert "hunter2 literally" not in output(done)


def test_a_lowercase_appd_setting_is_e007(project: DjangoProject) -> None:
    project.add_settings("\nappd = {}\n")
    done = project.manage("check")
    assert done.returncode == 1
    assert "(appd.E007) settings.appd is not read: appd's setting is settings.APPD" in (
        done.stderr
    )
