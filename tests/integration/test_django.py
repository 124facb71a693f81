"""``appd.contrib.django`` in a real Django project: ``manage.py appd``, views, connections.

Django is set up once per process, so every step runs ``manage.py`` (or a fresh interpreter) in
a subprocess, as a site's operators and web workers would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import descendants, free_port, kill_pids, pid_alive, read_pid, wait_for

pytest.importorskip("django")

KEY = "a django site key of 32 bytes!!!"

SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "not secret: a test project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["appd.contrib.django", "shop"]
MIDDLEWARE = []
ROOT_URLCONF = "mysite.urls"
DATABASES = {{
    "default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
}}
USE_TZ = True

APPD = {{
    "pid_file": "run/appd.pid",
    "log_file": "run/appd.log",
    "shutdown_grace": 5,
    "plugins": ["shop.appd_plugin"],
    "services": {{
        "echo": {{"port": {port}, "processes": 2, "key": "env:SHOP_ECHO_KEY"}},
    }},
}}
"""

URLS = """
from django.urls import path

from shop import views

urlpatterns = [path("echo/<str:word>", views.echo)]
"""

MANAGE = """
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

SERVICES = """
import json
import os
from pathlib import Path

from django.db import connection

from appd import SecureSocketAppClient, SecureSocketAppService


class EchoService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    key = "a key the settings override!!!!!"
    username = "shop"
    password = "shop password"

    def setup(self):
        inherited_closed = connection.connection is None
        with connection.cursor() as cursor:
            cursor.execute("select 1")
        record = {
            "pid": os.getpid(),
            "inherited_closed": inherited_closed,
            "own_connection": id(connection.connection),
        }
        with open(Path(__file__).resolve().parent.parent / "setup.jsonl", "a") as out:
            out.write(json.dumps(record) + "\\n")

    def handle_request(self, reqcmd, *args, **kwargs):
        if reqcmd == "echo":
            return list(args), dict(kwargs)
        if reqcmd == "pid":
            return [os.getpid()], {}
        raise ValueError(f"unknown command {reqcmd!r}")


# The seed's style: a module-level client, connecting on its first request only.
echo_client = SecureSocketAppClient(
    "127.0.0.1", 1, "shop", "shop password", "a module-level client key 32b!!!"
)
"""

APPD_PLUGIN = """
import json
import os
from pathlib import Path

from django.db import connection

from appd import hookimpl


@hookimpl
def appd_pre_fork(service, worker):
    # Use the database in the supervisor, so that a connection is open when it forks.
    with connection.cursor() as cursor:
        cursor.execute("select 1")
    record = {"pid": os.getpid(), "open": connection.connection is not None}
    with open(Path(__file__).resolve().parent.parent / "pre_fork.jsonl", "a") as out:
        out.write(json.dumps(record) + "\\n")
"""

VIEWS = """
from django.http import JsonResponse

from appd.contrib.django import service_client


def echo(request, word):
    res_args, res_kwargs = service_client("echo").send_request("echo", word, via="view")
    return JsonResponse({"args": res_args, "kwargs": res_kwargs})
"""


@dataclass
class Site:
    """A Django project in a directory, and ways to run its ``manage.py``."""

    root: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "appd.pid"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("APPD_CONFIG", None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["SHOP_ECHO_KEY"] = KEY
        return env

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh interpreter with the project's settings."""
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=self.root,
            env={**self.env(), "DJANGO_SETTINGS_MODULE": "mysite.settings", "PYTHONPATH": "."},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def status(self) -> dict[str, Any]:
        done = self.manage("appd", "status", "--json")
        data: dict[str, Any] = json.loads(done.stdout)
        data["exit"] = done.returncode
        return data

    def records(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    before = set(descendants())
    site = Site(tmp_path / "site", free_port())
    write(site.root / "manage.py", MANAGE)
    write(site.root / "mysite" / "__init__.py", "")
    write(site.root / "mysite" / "settings.py", SETTINGS.format(port=site.port))
    write(site.root / "mysite" / "urls.py", URLS)
    write(site.root / "shop" / "__init__.py", "")
    write(site.root / "shop" / "services.py", SERVICES)
    write(site.root / "shop" / "appd_plugin.py", APPD_PLUGIN)
    write(site.root / "shop" / "views.py", VIEWS)
    yield site
    pid = read_pid(site.pid_file)
    if pid is not None and pid_alive(pid):
        site.manage("appd", "stop", "--timeout", "10")
    kill_pids(set(descendants()) - before)


def all_ready(status: dict[str, Any]) -> bool:
    services = status.get("services", {})
    return bool(services) and all(s["state"] == "ready" for s in services.values())


def test_manage_py_appd_list_shows_the_apps_service(site: Site) -> None:
    done = site.manage("appd", "list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "SOURCE", "ADDRESS"]
    assert [row.split() for row in rows] == [
        ["echo", "shop.services.EchoService", "module", "shop.services", f"127.0.0.1:{site.port}"]
    ]


def test_settings_appd_errors_name_the_setting(site: Site) -> None:
    settings = site.root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nAPPD["shutdown_grace"] = "soon"\n')
    done = site.manage("appd", "check")
    assert done.returncode == 1
    assert "appd: error: settings.APPD: shutdown_grace: expected a number, got str 'soon'" in (
        done.stderr
    )
    settings.write_text(settings.read_text() + '\nAPPD = ["not", "a", "dict"]\n')
    done = site.manage("appd", "list")
    assert done.returncode == 1
    assert "settings.APPD: expected a dict of settings, got list" in done.stderr


def test_plugins_lists_the_connections_plugin(site: Site) -> None:
    done = site.manage("appd", "plugins")
    assert done.returncode == 0, done.stderr
    plugins = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "appd_pre_fork" in plugins["appd.contrib.django.connections"]
    assert "appd_post_fork" in plugins["appd.contrib.django.connections"]
    assert "appd_pre_fork" in plugins["shop.appd_plugin"]


def test_start_status_call_view_stop(site: Site) -> None:
    started = site.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr + started.stdout
    assert "echo ready" in started.stdout
    daemon = read_pid(site.pid_file)
    assert daemon is not None and pid_alive(daemon)

    status = site.status()
    assert status["exit"] == 0
    assert all_ready(status)
    assert status["services"]["echo"]["state"] == "ready"
    assert len(status["services"]["echo"]["processes"]) == 2
    text = site.manage("appd", "status")
    assert "echo: ready" in text.stdout

    called = site.manage("appd", "call", "echo", "echo", "3", "word", "on=true")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"args": [3, "word"], "kwargs": {"on": True}}

    view = site.manage(
        "shell", "-c",
        "from django.test import Client; r = Client().get('/echo/hello');"
        " print(r.status_code, r.content.decode())",
    )
    assert view.returncode == 0, view.stderr
    code, _, body = view.stdout.strip().splitlines()[-1].partition(" ")
    assert code == "200"
    assert json.loads(body) == {"args": ["hello"], "kwargs": {"via": "view"}}

    service_pids = [p["pid"] for p in status["services"]["echo"]["processes"]]
    stopped = site.manage("appd", "stop", "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert f"appd stopped (pid {daemon})" in stopped.stdout
    wait_for(lambda: not any(pid_alive(p) for p in [daemon, *service_pids]),
             message="the daemon and its services to exit")
    assert not site.pid_file.exists()
    assert site.manage("appd", "status").returncode == 3


def test_database_connections_are_not_shared_with_service_processes(site: Site) -> None:
    started = site.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr + started.stdout
    wait_for(lambda: len(site.records("setup.jsonl")) == 2, message="both services set up")
    pre_fork = site.records("pre_fork.jsonl")
    setups = site.records("setup.jsonl")
    # The supervisor had a connection open when its plugins ran just before each fork ...
    assert len(pre_fork) == 2 and all(r["open"] for r in pre_fork)
    supervisor = {r["pid"] for r in pre_fork}
    assert len(supervisor) == 1
    # ... yet each service process started with none and opened its own.
    assert all(r["inherited_closed"] for r in setups)
    assert {r["pid"] for r in setups}.isdisjoint(supervisor)
    assert site.manage("appd", "stop", "--timeout", "20").returncode == 0


def test_importing_services_and_views_opens_no_socket(site: Site) -> None:
    code = """
        import os
        from pathlib import Path

        def sockets():
            fds = Path("/proc/self/fd")
            links = []
            for fd in fds.iterdir():
                try:
                    links.append(os.readlink(fd))
                except OSError:
                    pass
            return [link for link in links if link.startswith("socket:")]

        import django
        django.setup()
        import mysite.urls, shop.services, shop.views
        from appd.contrib.django import service_client
        client = service_client("echo")
        assert service_client("echo") is client
        print(client.address, len(sockets()))
    """
    done = site.python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"127.0.0.1:{site.port}", "0"]


def test_run_in_the_foreground_serves_and_stops_on_sigterm(site: Site) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "appd", "run"],
        cwd=site.root,
        env=site.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: all_ready(site.status()) or proc.poll() is not None, timeout=30,
                 message="appd run to be ready")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        called = site.manage("appd", "call", "echo", "echo", '"ping"')
        assert json.loads(called.stdout) == {"args": ["ping"], "kwargs": {}}
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_manage_py_appd_check_names_a_bad_service_setting(site: Site) -> None:
    settings = site.root / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text() + '\nAPPD["services"]["echo"]["concurrency"] = 0\n'
    )
    done = site.manage("appd", "check")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "settings.APPD: services.echo.concurrency: expected a positive integer, got 0" in (
        output
    )
    assert output.count("concurrency") == 1
    assert "Traceback" not in output
