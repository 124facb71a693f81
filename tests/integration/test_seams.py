"""One way through: the request pipeline whichever way a service is served, one plugin manager
per invocation, settings validated once with errors naming the file and the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import free_port, wait_for

from appd import ConfigurationError, SecureSocketAppClient, SecureSocketAppService, command

KEY = "a seams test key of thirty-two b"

SERVICES_PY = f"""
from appd import SecureSocketAppService, command


class EchoService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    key = {KEY!r}
    username = "web"
    password = "web password"

    @command
    def echo(self, value):
        return value
"""

AUDIT_PLUGIN = """
import json
import os

from appd import hookimpl


@hookimpl(wrapper=True)
def appd_request(service, request):
    result = yield
    with open(os.environ["AUDIT_FILE"], "a") as out:
        out.write(json.dumps([service.name, request.cmd, request.username, result[0]]) + "\\n")
    return result
"""

SERVE_SCRIPT = """
import signal
import sys
from pathlib import Path

from appd.runtime.quit import request_quit
from services import EchoService

signal.signal(signal.SIGTERM, lambda *_: request_quit())
service = EchoService()
listener = service.bind()
Path(sys.argv[1]).write_text(str(listener.getsockname()[1]))
service.serve(listener)
"""

COMMAND_PLUGIN = """
from appd import hookimpl


@hookimpl
def appd_add_commands(subparsers):
    parser = subparsers.add_parser("greet", help="say hello from a configured plugin")
    parser.set_defaults(handler=lambda args: print("hello from greet") or 0)
"""


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("APPD_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    env["AUDIT_FILE"] = str(root / "audit.jsonl")
    return env


def _appd(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appd", *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_outside_the_supervisor_goes_through_a_configured_plugin(
    tmp_path: Path, pids_to_kill: list[int]
) -> None:
    (tmp_path / "services.py").write_text(SERVICES_PY)
    (tmp_path / "audit_plugin.py").write_text(AUDIT_PLUGIN)
    (tmp_path / "serve.py").write_text(SERVE_SCRIPT)
    (tmp_path / "appd.toml").write_text('plugins = ["audit_plugin"]\n')
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "serve.py", str(port_file)], cwd=tmp_path, env=_env(tmp_path)
    )
    pids_to_kill.append(proc.pid)
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), timeout=20))
    client = SecureSocketAppClient("127.0.0.1", port, "web", "web password", KEY)
    try:
        assert client.call("echo", 41) == 41
        assert client.call("echo", "x") == "x"
    finally:
        client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        ["echo", "echo", "web", [41]],
        ["echo", "echo", "web", ["x"]],
    ]


def test_a_plugin_named_only_in_the_configuration_adds_a_subcommand(tmp_path: Path) -> None:
    (tmp_path / "greet_plugin.py").write_text(COMMAND_PLUGIN)
    (tmp_path / "appd.toml").write_text('plugins = ["greet_plugin"]\n')
    helped = _appd(tmp_path, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "greet" in helped.stdout
    assert "say hello from a configured plugin" in helped.stdout
    greeted = _appd(tmp_path, "greet")
    assert (greeted.returncode, greeted.stdout) == (0, "hello from greet\n")


def test_the_console_script_finds_a_plugin_beside_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "greet_plugin.py").write_text(COMMAND_PLUGIN)
    (tmp_path / "appd.toml").write_text('plugins = ["greet_plugin"]\n')
    script = str(Path(sys.executable).with_name("appd"))
    env = dict(os.environ)
    env.pop("APPD_CONFIG", None)
    env.pop("PYTHONPATH", None)
    here = subprocess.run(
        [script, "greet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (here.returncode, here.stdout) == (0, "hello from greet\n"), here.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    there = subprocess.run(
        [script, "--config", str(tmp_path / "appd.toml"), "--help"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "say hello from a configured plugin" in there.stdout, there.stderr


def test_a_plugin_that_cannot_load_is_named_when_its_command_is_missing(tmp_path: Path) -> None:
    (tmp_path / "appd.toml").write_text('plugins = ["no_such_plugin"]\n')
    done = _appd(tmp_path, "greet")
    assert done.returncode == 2
    assert "plugins: cannot load 'no_such_plugin'" in done.stderr


def _project(root: Path, table: str) -> Path:
    (root / "services.py").write_text(SERVICES_PY)
    (root / "appd.toml").write_text(
        textwrap.dedent(
            """
            pid_file = "run/appd.pid"
            log_file = "run/appd.log"
            paths = ["."]

            """
        )
        + textwrap.dedent(table)
    )
    return root / "appd.toml"


@pytest.mark.parametrize("command", [("check",), ("run",)])
def test_a_bad_service_setting_is_one_error_naming_the_file_and_the_key(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    _project(tmp_path, f"[services.echo]\nport = {free_port()}\nconcurrency = 0\n")
    done = _appd(tmp_path, *command, timeout=30)
    assert done.returncode == 1
    expected = "appd.toml: services.echo.concurrency: expected a positive integer, got 0"
    output = done.stdout + done.stderr
    assert expected in output
    assert output.count("concurrency") == 1
    assert "Traceback" not in output


def test_a_table_for_no_discovered_service_is_an_error_naming_it(tmp_path: Path) -> None:
    _project(tmp_path, f"[services.echo]\nport = {free_port()}\n[services.ecoh]\nport = 1\n")
    done = _appd(tmp_path, "check")
    assert done.returncode == 1
    assert "appd.toml: services.ecoh: no service named 'ecoh' was discovered" in done.stdout
    run = _appd(tmp_path, "run", timeout=30)
    assert run.returncode == 1
    assert "services.ecoh: no service named 'ecoh'" in run.stderr


def test_a_class_value_error_names_the_class_and_the_attribute() -> None:
    class Misconfigured(SecureSocketAppService):
        port = 0
        key = KEY
        username, password = "u", "p"
        max_queue = -1

    with pytest.raises(ConfigurationError) as info:
        Misconfigured().configure()
    assert str(info.value).endswith(
        "Misconfigured.max_queue: must be at least 0, got -1"
    )


def test_a_command_that_shadows_a_setting_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(ConfigurationError) as info:

        class Shadowing(SecureSocketAppService):
            @command
            def users(self) -> list[str]:
                return []

    message = str(info.value)
    assert "Shadowing" in message
    assert "command method 'users'" in message
    assert "setting 'users'" in message


def test_a_command_of_another_name_may_use_a_settings_name_as_its_command() -> None:
    class Renamed(SecureSocketAppService):
        @command("users")
        def list_users(self) -> list[str]:
            return ["web"]

    assert Renamed._commands == {"users": "list_users"}


def test_settings_are_built_once_and_frozen(tmp_path: Path) -> None:
    class Once(SecureSocketAppService):
        port = 0
        key = KEY
        username, password = "u", "p"

    service = Once()
    settings = service.configure({"concurrency": 3}, source="appd.toml")
    assert service.settings is settings
    assert settings.server.concurrency == 3 and service.concurrency == 3
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert KEY not in repr(settings)
    assert "users" not in repr(settings)
