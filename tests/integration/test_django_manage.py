"""``manage.py appd`` as Django developers expect it, in a project made with startproject:
call_command, Django's standard options, clients from settings alone, one supervisor whichever
door (``manage.py appd`` or ``appd``), a closed pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django_project import KEY, PASSWORD, DjangoProject, all_ready, make_project
from support import descendants, kill_pids, pid_alive, read_pid, wait_for

pytest.importorskip("django")

#: A driver module the service needs; only the supervisor's processes can import it.
DRIVER = """
def identify():
    return "device driver 1.0"
"""

SERVICES_WITH_DRIVER = """
import device_driver

from appd import SecureSocketAppService, command


class DeviceService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    username = "web"

    @command
    def ping(self):
        return "pong from " + device_driver.identify()
"""

VIEWS = """
from django.http import JsonResponse

from appd.contrib.django import clients, service_client


def ping(request):
    return JsonResponse({"reply": service_client("device").call("ping")})


def ping_through_clients(request):
    same = clients.device is service_client("device")
    return JsonResponse({"reply": clients["device"].call("ping"), "same": same})
"""

URLS = """
from django.urls import path

from devices import views

urlpatterns = [path("ping", views.ping), path("ping2", views.ping_through_clients)]
"""

#: In a web worker's place: Django's test client asks the views.
WEB_REQUESTS = """
import json, sys
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
replies = [client.get(url) for url in ("/ping", "/ping2")]
print(json.dumps({
    "status": [r.status_code for r in replies],
    "bodies": [r.json() for r in replies],
    "services_imported": "devices.services" in sys.modules,
}))
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    project = make_project(tmp_path / "site")
    yield project
    pid = read_pid(project.pid_file)
    if pid is not None and pid_alive(pid):
        project.manage("appd", "stop", "--timeout", "10")
    kill_pids(set(descendants()) - before)


def start(project: DjangoProject) -> int:
    started = project.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = read_pid(project.pid_file)
    assert pid is not None
    return pid


def test_call_command_captures_output_and_raises_command_error_with_the_remote_error(
    project: DjangoProject,
) -> None:
    start(project)
    code = """
        import io, json
        import django
        django.setup()
        from django.core.management import call_command
        from django.core.management.base import CommandError

        out, err = io.StringIO(), io.StringIO()
        call_command("appd", "status", stdout=out, stderr=err)
        called = io.StringIO()
        call_command("appd", "call", "device", "ping", stdout=called)
        try:
            call_command("appd", "call", "device", "boom", stdout=io.StringIO())
        except CommandError as exc:
            failure = [str(exc), exc.returncode]
        else:
            failure = None
        print(json.dumps({"status": out.getvalue(), "err": err.getvalue(),
                          "called": called.getvalue(), "failure": failure}))
    """
    done = project.python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"].startswith("appd is running (pid ")
    assert "device: ready" in report["status"]
    assert report["err"] == ""
    assert json.loads(report["called"]) == {"args": ["pong"], "kwargs": {}}
    message, returncode = report["failure"]
    assert returncode == 1
    assert message.startswith("appd call device boom: ")
    assert "ValueError: the device said no" in message


def test_subcommands_take_djangos_standard_options(project: DjangoProject) -> None:
    start(project)
    for options in (["-v", "2"], ["--traceback"], ["--no-color"], ["-v", "0", "--no-color"]):
        done = project.manage("appd", "status", *options)
        assert done.returncode == 0, (options, done.stderr)
        assert "device: ready" in done.stdout
    done = project.manage("appd", "call", "device", "ping", "-v", "2", "--settings",
                          "mysite.settings", "--pythonpath", ".")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"args": ["pong"], "kwargs": {}}
    failed = project.manage("appd", "call", "device", "boom", "--no-color")
    assert failed.returncode == 1
    assert "appd: error: " in failed.stderr and "the device said no" in failed.stderr
    assert "Traceback" not in failed.stderr
    traced = project.manage("appd", "call", "device", "boom", "--traceback")
    assert traced.returncode == 1
    assert "Traceback" in traced.stderr and "RemoteError" in traced.stderr

    helped = project.manage("help", "appd")
    assert helped.returncode == 0, helped.stderr
    assert "settings.APPD" in helped.stdout
    assert "usage: manage.py appd" in helped.stdout


def test_a_view_calls_a_service_whose_services_py_it_cannot_import(
    project: DjangoProject, tmp_path: Path
) -> None:
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    (drivers / "device_driver.py").write_text(DRIVER)
    project.write("devices/services.py", SERVICES_WITH_DRIVER)
    project.write("devices/views.py", VIEWS)
    project.write("mysite/urls.py", URLS)
    started = project.manage("appd", "start", "--timeout", "30", PYTHONPATH=str(drivers))
    assert started.returncode == 0, started.stdout + started.stderr

    # Here, as on a web host without the driver, services.py cannot be imported ...
    broken = project.python("import devices.services")
    assert "No module named 'device_driver'" in broken.stderr
    # ... yet the views reach the service: the client comes from settings.APPD alone.
    done = project.python(WEB_REQUESTS)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == [200, 200]
    assert report["bodies"] == [
        {"reply": "pong from device driver 1.0"},
        {"reply": "pong from device driver 1.0", "same": True},
    ]
    assert report["services_imported"] is False


def test_list_status_stop_and_plugins_need_no_secret(project: DjangoProject) -> None:
    start(project)
    project.env = {k: v for k, v in project.env.items() if k not in ("DEVICE_KEY",
                                                                        "DEVICE_PASSWORD")}
    listed = project.manage("appd", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert rows == [["device", "devices.services.DeviceService", "module", "devices.services",
                     f"127.0.0.1:{project.port}"]]
    assert project.manage("appd", "plugins").returncode == 0
    status = project.manage("appd", "status")
    assert status.returncode == 0, status.stderr
    assert "device: ready" in status.stdout
    # A command that needs the secret still says which one is missing.
    called = project.manage("appd", "call", "device", "ping")
    assert called.returncode == 1
    assert "environment variable 'DEVICE_KEY' is not set" in called.stderr
    stopped = project.manage("appd", "stop", "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr


def appd(project: DjangoProject, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The plain ``appd`` command in the project directory (no PYTHONPATH)."""
    return project.run(sys.executable, "-m", "appd", *args, **env)


def test_appd_beside_the_project_finds_the_supervisor_manage_py_started(
    project: DjangoProject,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "appd", "run"],
        cwd=project.root, env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: all_ready(project.status()) or proc.poll() is not None, timeout=30,
                 message="manage.py appd run to be ready")
        assert proc.poll() is None
        status = appd(project, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"appd is running (pid {proc.pid})")
        assert "device: ready" in status.stdout
        called = appd(project, "call", "device", "ping")
        assert json.loads(called.stdout) == {"args": ["pong"], "kwargs": {}}

        listed = appd(project, "list", DJANGO_SETTINGS_MODULE="mysite.settings")
        assert listed.returncode == 0, listed.stderr
        assert "devices.services.DeviceService" in listed.stdout

        stopped = appd(project, "stop", "--timeout", "20")
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("door", ["manage.py", "appd"])
def test_a_closed_pipe_ends_quietly(project: DjangoProject, door: str) -> None:
    argv = ["manage.py", "appd", "list"] if door == "manage.py" else ["-m", "appd", "list"]
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=project.root, env=project.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader (`| head -1`) has gone before anything is written
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
        assert proc.returncode == 1


def test_the_client_settings_never_show_secrets(project: DjangoProject) -> None:
    code = """
        import django
        django.setup()
        from appd.contrib.django.client import client_settings
        print(repr(client_settings("device")))
        print(client_settings("nothing"))
    """
    done = project.python(code)
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert f"<ClientSettings 'device' 127.0.0.1:{project.port} as 'web'>" in shown
    assert KEY not in shown and PASSWORD not in shown
    assert shown.split()[-1] == "None"
