"""``manage.py appd run --reload`` (and ``appd run --reload``): editing ``services.py`` reloads
the services, and a request in flight is not lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_project import KEY, PASSWORD, DjangoProject, all_ready, make_project
from support import descendants, kill_pids, wait_for

pytest.importorskip("django")
pytest.importorskip("watchfiles")

pytestmark = pytest.mark.slow

SERVICES = """
import time
from pathlib import Path

from appd import SecureSocketAppService, command


class DeviceService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    username = "web"

    @command
    def ping(self):
        return "pong"

    @command
    def slow(self, seconds, marker):
        Path(marker).touch()
        time.sleep(seconds)
        return "done"
"""

ADDED = """

    @command
    def hello(self):
        return "hello from the edited services.py"
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    project = make_project(tmp_path / "site")
    project.write("devices/services.py", SERVICES)
    yield project
    kill_pids(set(descendants()) - before)


def client(project: DjangoProject) -> Any:
    from appd import SecureSocketAppClient

    return SecureSocketAppClient("127.0.0.1", project.port, "web", PASSWORD, KEY, timeout=20)


def answer(project: DjangoProject, command: str) -> Any:
    from appd.errors import AppdError

    try:
        with client(project) as c:
            return c.call(command)
    except AppdError:
        return None


@pytest.mark.serial
@pytest.mark.parametrize("door", ["manage.py", "appd"])
def test_editing_services_py_adds_a_command_within_3_s_and_loses_no_request(
    project: DjangoProject, tmp_path: Path, door: str
) -> None:
    argv = ["manage.py", "appd"] if door == "manage.py" else ["-m", "appd"]
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, *argv, "run", "--reload"],
        cwd=project.root, env=project.env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: all_ready(project.status()) or proc.poll() is not None, timeout=30,
                 message="appd run --reload to be ready")
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        assert answer(project, "ping") == "pong"
        assert answer(project, "hello") is None  # not there yet

        marker = tmp_path / "slow-started"
        in_flight: dict[str, Any] = {}

        def slow_call() -> None:
            try:
                with client(project) as c:
                    in_flight["reply"] = c.call("slow", 1.0, str(marker))
            except Exception as exc:
                in_flight["error"] = repr(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        wait_for(marker.exists, message="the slow request to be running")

        services = project.root / "devices" / "services.py"
        services.write_text(services.read_text() + ADDED)
        edited = time.monotonic()
        wait_for(lambda: answer(project, "hello"), timeout=10,
                 message="the new command to answer")
        took = time.monotonic() - edited
        caller.join(timeout=30)
        assert in_flight == {"reply": "done"}
        assert took < 3.0, f"the new command answered after {took:.1f}s"
        assert answer(project, "hello") == "hello from the edited services.py"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not project.pid_file.exists()
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_reload_is_never_on_by_default(project: DjangoProject, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "appd", "run"],
        cwd=project.root, env=project.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for(lambda: all_ready(project.status()), timeout=30, message="appd run ready")
        pids = [p["pid"] for p in project.status()["services"]["device"]["processes"]]
        services = project.root / "devices" / "services.py"
        services.write_text(services.read_text() + ADDED)
        # Well past the reload's debounce: the same processes, the old code.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert [p["pid"] for p in project.status()["services"]["device"]["processes"]] == pids
        assert answer(project, "hello") is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_editing_the_settings_restarts_the_supervisor_with_them(
    project: DjangoProject, tmp_path: Path
) -> None:
    from support import free_port

    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "appd", "run", "--reload"],
        cwd=project.root, env=project.env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: all_ready(project.status()) or proc.poll() is not None, timeout=30,
                 message="appd run --reload to be ready")
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        old_port, project.port = project.port, free_port()
        project.add_settings(f'\nAPPD["services"]["device"]["port"] = {project.port}\n')
        wait_for(lambda: answer(project, "ping") == "pong", timeout=15,
                 message="the service to answer on the port the edited settings give")
        project.port = old_port
        assert answer(project, "ping") is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
