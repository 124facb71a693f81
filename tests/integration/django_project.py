"""A real Django project, made the way a developer makes one: ``django-admin startproject``,
``manage.py startapp``, then ``appd.contrib.django`` and an app's ``services.py`` added.

Django is set up once per process, so every step runs ``manage.py`` (or a fresh interpreter)
in a subprocess, as a site's operators and web workers would.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import free_port

KEY = "a device key of thirty-two bytes!"
PASSWORD = "the web's password"

#: The ``devices`` app's service: a name derived from the class (``DeviceService`` -> device).
DEVICE_SERVICES = """
import os
import time

from appd import SecureSocketAppService, command


class DeviceService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    username = "web"

    @command
    def ping(self):
        return "pong"

    @command
    def pid(self):
        return os.getpid()

    @command
    def slow(self, seconds):
        time.sleep(seconds)
        return "done"

    @command
    def boom(self):
        raise ValueError("the device said no")

    @command
    def scope(self, note=""):
        import appd

        if note:
            appd.get_logger("devices").info(note)
        return [appd.time_remaining(), appd.current_request_id()]
"""

#: Appended to the generated settings.py.
APPD_SETTINGS = """

INSTALLED_APPS += ["appd.contrib.django", "devices"]

APPD = {{
    "pid_file": "run/appd.pid",
    "log_file": "run/appd.log",
    "shutdown_grace": 5,
    "services": {{
        "device": {{
            "port": {port},
            "username": "web",
            "key": "env:DEVICE_KEY",
            "password": "env:DEVICE_PASSWORD",
        }},
    }},
}}
"""


@dataclass
class DjangoProject:
    """``mysite`` with the app ``devices`` in ``root``; ``env`` is what its processes get."""

    root: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def settings_py(self) -> Path:
        return self.root / "mysite" / "settings.py"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "appd.pid"

    def add_settings(self, text: str) -> None:
        """Append ``text`` to settings.py."""
        self.settings_py.write_text(self.settings_py.read_text() + textwrap.dedent(text))

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def run(
        self, *argv: str, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def manage(
        self, *args: str, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "manage.py", *args, timeout=timeout, **env)

    def python(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``code`` in a fresh interpreter with the project's settings (as a web worker)."""
        return self.run(
            sys.executable, "-c", textwrap.dedent(code),
            DJANGO_SETTINGS_MODULE="mysite.settings", PYTHONPATH=str(self.root), **env,
        )

    def status(self) -> dict[str, Any]:
        done = self.manage("appd", "status", "--json")
        data: dict[str, Any] = json.loads(done.stdout)
        data["exit"] = done.returncode
        return data


def all_ready(status: dict[str, Any]) -> bool:
    services = status.get("services", {})
    return bool(services) and all(s["state"] == "ready" for s in services.values())


_pristine: list[Path] = []


def _pristine_project(env: dict[str, str]) -> Path:
    """What ``startproject mysite`` and ``startapp devices`` make, made once per test process
    (two Django interpreters) and copied for each project."""
    if not _pristine:
        directory = Path(tempfile.mkdtemp(prefix="appd-django-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        maker = DjangoProject(directory, 0, env)
        created = maker.run(sys.executable, "-m", "django", "startproject", "mysite", ".")
        assert created.returncode == 0, created.stderr
        created = maker.manage("startapp", "devices")
        assert created.returncode == 0, created.stderr
        _pristine.append(directory)
    return _pristine[0]


def make_project(directory: Path) -> DjangoProject:
    """startproject, startapp, services.py and settings.APPD: a project that checks clean."""
    unwanted = ("APPD_CONFIG", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    env.update(DEVICE_KEY=KEY, DEVICE_PASSWORD=PASSWORD)
    shutil.copytree(_pristine_project(env), directory, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    project = DjangoProject(directory, free_port(), env)
    project.write("devices/services.py", DEVICE_SERVICES)
    project.add_settings(APPD_SETTINGS.format(port=project.port))
    return project
