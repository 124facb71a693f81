"""The ``appd`` command driven as a user would: real subprocesses, real daemons, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import descendants, free_port, kill_pids, pid_alive, read_pid, wait_for

TESTS_DIR = Path(__file__).resolve().parent.parent

SERVICES_PY = textwrap.dedent(
    """
    import os
    import time

    from appd import AppServiceBase, SecureSocketAppService


    class EchoService(SecureSocketAppService):
        host = "127.0.0.1"
        port = 0
        key = "an echo key of thirty-two bytes!"
        username = "echo"
        password = "echo password"

        def handle_request(self, reqcmd, *args, **kwargs):
            if reqcmd == "echo":
                return list(args), dict(kwargs)
            if reqcmd == "pid":
                return [os.getpid()], {}
            if reqcmd == "slow":
                time.sleep(args[0])
                return ["done"], {}
            raise ValueError(f"unknown command {reqcmd!r}")


    class CrashService(AppServiceBase):
        def run(self):
            raise RuntimeError("this service always crashes")


    class TickService(AppServiceBase):
        pass
    """
)


@dataclass
class Project:
    """A directory with services.py and appd.toml, and a way to run ``appd`` in it."""

    root: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "appd.pid"

    def write_config(self, extra: str = "", *, enabled: str = '["echo", "tick"]') -> None:
        (self.root / "appd.toml").write_text(
            textwrap.dedent(
                f"""
                pid_file = "run/appd.pid"
                log_file = "run/appd.log"
                paths = ["."]
                enabled = {enabled}
                shutdown_grace = 5
                plugins = ["recording_plugin:recorder"]

                [services.echo]
                port = {self.port}
                processes = 2
                """
            )
            + textwrap.dedent(extra)
        )
        (self.root / "appd.toml").chmod(0o600)

    def appd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
        env["APPD_RECORD_HOOKS"] = str(self.root / "hooks.jsonl")
        env.pop("APPD_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "appd", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict[str, Any]:
        result = self.appd("status", "--json")
        data: dict[str, Any] = json.loads(result.stdout)
        data["exit"] = result.returncode
        return data

    def hook_calls(self, name: str) -> list[dict[str, Any]]:
        path = self.root / "hooks.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [c for c in calls if c["hook"] == name]

    def client(self) -> Any:
        from appd import SecureSocketAppClient

        return SecureSocketAppClient(
            "127.0.0.1", self.port, "echo", "echo password", "an echo key of thirty-two bytes!"
        )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    before = set(descendants())
    (tmp_path / "services.py").write_text(SERVICES_PY)
    proj = Project(tmp_path, free_port())
    proj.write_config()
    yield proj
    pid = read_pid(proj.pid_file)
    if pid is not None and pid_alive(pid):
        proj.appd("stop", "--timeout", "10")
    kill_pids(set(descendants()) - before)


def service_pids(status: dict[str, Any], name: str) -> list[int]:
    return [p["pid"] for p in status["services"][name]["processes"] if p["pid"]]


def all_ready(status: dict[str, Any]) -> bool:
    services = status.get("services", {})
    return bool(services) and all(s["state"] == "ready" for s in services.values())


def test_start_status_call_kill_restart_stop(project: Project) -> None:
    started = project.appd("start")
    assert started.returncode == 0, started.stderr
    assert "ready" in started.stdout

    status = project.status()
    assert status["exit"] == 0
    assert set(status["services"]) == {"echo", "tick"}
    assert all_ready(status)

    called = project.appd("call", "echo", "echo", "3", "hello", "on=true")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"args": [3, "hello"], "kwargs": {"on": True}}

    victim = service_pids(status, "echo")[0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = project.status()
        echo = now["services"]["echo"]
        fresh = victim not in service_pids(now, "echo")
        return now if fresh and echo["restarts"] >= 1 and all_ready(now) else None

    after = wait_for(restarted, timeout=20, message="the killed process to be restarted")
    assert len(service_pids(after, "echo")) == 2
    again = project.appd("call", "echo", "echo", '"back"')
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["args"] == ["back"]
    served = wait_for(lambda: project.status()["services"]["echo"]["requests"] >= 1)
    assert served

    every_pid = [status["pid"], *service_pids(after, "echo"), *service_pids(after, "tick")]
    stopped = project.appd("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not project.pid_file.exists()
    wait_for(lambda: not any(pid_alive(p) for p in every_pid), message="every process to exit")
    assert project.appd("status").returncode == 3


def test_second_start_says_already_running_with_the_pid(project: Project) -> None:
    assert project.appd("start").returncode == 0
    guardian = read_pid(project.pid_file)
    second = project.appd("start")
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert str(guardian) in second.stderr


def test_start_with_port_in_use_names_service_and_port(project: Project) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", project.port))
        squatter.listen()
        result = project.appd("start", "--timeout", "20")
    assert result.returncode == 1
    assert "echo" in result.stderr
    assert str(project.port) in result.stderr
    wait_for(lambda: not project.pid_file.exists(), message="the failed daemon's pid file to go")


def test_run_in_foreground_port_in_use_fails_fast(project: Project) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", project.port))
        squatter.listen()
        result = project.appd("run", timeout=30)
    assert result.returncode == 1
    assert "echo" in result.stderr and str(project.port) in result.stderr


def test_crash_looping_service_ends_fatal_while_others_serve(project: Project) -> None:
    project.write_config(
        """
        [services.crash]
        restart_interval = 0.05
        restart_max_interval = 0.1
        restart_max = 2
        restart_window = 60
        """,
        enabled='["echo", "crash"]',
    )
    started = project.appd("start", "--timeout", "5")
    assert started.returncode == 1  # crash never becomes ready
    wait_for(
        lambda: project.status()["services"]["crash"]["state"] == "fatal",
        timeout=20,
        message="crash to end FATAL",
    )
    final = [c for c in project.hook_calls("appd_crash") if c["kwargs"]["will_restart"] == "False"]
    assert len(final) == 1
    assert project.status()["services"]["echo"]["state"] == "ready"
    called = project.appd("call", "echo", "echo", "1")
    assert called.returncode == 0, called.stderr


def test_sighup_restarts_one_at_a_time_without_failed_requests(project: Project) -> None:
    assert project.appd("start").returncode == 0
    before = set(service_pids(project.status(), "echo"))
    failures: list[BaseException] = []
    replies = 0
    stop = threading.Event()

    def call_in_a_loop() -> None:
        nonlocal replies
        with project.client() as client:
            while not stop.is_set():
                try:
                    args, _ = client.send_request("echo", replies)
                    assert args == [replies]
                    replies += 1
                except BaseException as exc:  # every failure counts
                    failures.append(exc)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        wait_for(lambda: replies > 20, message="the client to get going")
        guardian = read_pid(project.pid_file)
        assert guardian is not None
        os.kill(guardian, signal.SIGHUP)

        def replaced() -> bool:
            now = project.status()
            pids = set(service_pids(now, "echo"))
            return len(pids) == 2 and not (pids & before) and all_ready(now)

        wait_for(replaced, timeout=40, message="both echo processes to be replaced")
        count = replies
        wait_for(lambda: replies > count + 20, message="requests after the restart")
    finally:
        stop.set()
        caller.join(timeout=30)
    assert failures == []
    assert project.hook_calls("appd_service_ready")


def test_list_plugins_and_check_start_nothing(project: Project) -> None:
    listed = project.appd("list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert {"echo", "crash", "tick"} <= set(lines)
    assert f"127.0.0.1:{project.port}" in lines["echo"]
    assert "services.EchoService" in lines["echo"]

    plugins = project.appd("plugins")
    assert plugins.returncode == 0, plugins.stderr
    assert "appd_crash" in plugins.stdout  # the configured recording plugin's hooks

    checked = project.appd("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "echo: address free" in checked.stdout
    assert not project.pid_file.exists()

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", project.port))
        squatter.listen()
        busy = project.appd("check")
    assert busy.returncode == 1
    assert str(project.port) in busy.stdout


def test_check_reports_a_short_key_and_an_invalid_setting(project: Project) -> None:
    project.write_config('key = "only sixteen chars"\n')
    short = project.appd("check")
    assert short.returncode == 1
    assert "key is 18 bytes" in short.stdout
    assert "only sixteen" not in short.stdout + short.stderr

    project.write_config('concurrency = "two"\n')
    invalid = project.appd("check")
    assert invalid.returncode == 1
    assert "concurrency" in invalid.stdout + invalid.stderr


def test_run_in_foreground_fires_hooks_and_stops_on_sigterm(project: Project) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["APPD_RECORD_HOOKS"] = str(project.root / "hooks.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appd", "run"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: all_ready(project.status()), timeout=20, message="services ready")
        assert read_pid(project.pid_file) == proc.pid
        with project.client() as client:
            assert client.send_request("echo", "hi") == (["hi"], {})
        status = project.status()
        children = [*service_pids(status, "echo"), *service_pids(status, "tick")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert not project.pid_file.exists()
    assert not any(pid_alive(p) for p in children)
    assert len(project.hook_calls("appd_pre_fork")) == 3
    assert len(project.hook_calls("appd_post_fork")) == 3
    assert len(project.hook_calls("appd_service_ready")) == 3
    requests = project.hook_calls("appd_request")
    assert requests and "echo" in requests[0]["kwargs"]["request"]
    quits = project.hook_calls("appd_quit")
    assert any(call["pid"] == proc.pid for call in quits)


def test_restart_replaces_the_daemon(project: Project) -> None:
    assert project.appd("start").returncode == 0
    first = read_pid(project.pid_file)
    restarted = project.appd("restart")
    assert restarted.returncode == 0, restarted.stderr
    second = read_pid(project.pid_file)
    assert second is not None and second != first
    assert first is not None and not pid_alive(first)
    assert project.appd("stop").returncode == 0


def test_stop_and_status_when_not_running_exit_3(project: Project) -> None:
    assert project.appd("stop").returncode == 3
    status = project.appd("status", "--json")
    assert status.returncode == 3
    assert json.loads(status.stdout)["state"] == "not running"


def test_call_failure_exits_1_with_the_remote_error(project: Project) -> None:
    assert project.appd("start").returncode == 0
    failed = project.appd("call", "echo", "nope")
    assert failed.returncode == 1
    assert "ValueError" in failed.stderr and "nope" in failed.stderr
    missing = project.appd("call", "ghost", "echo")
    assert missing.returncode == 1
    assert "ghost" in missing.stderr


def test_sigterm_lets_in_flight_requests_finish(project: Project) -> None:
    assert project.appd("start").returncode == 0
    replies: list[Any] = []
    errors: list[BaseException] = []

    def slow_call() -> None:
        try:
            with project.client() as client:
                replies.append(client.send_request("slow", 1.5))
        except BaseException as exc:  # the test asserts there is none
            errors.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_for(
        lambda: project.hook_calls("appd_request"), message="the slow request to be in flight"
    )
    guardian = read_pid(project.pid_file)
    assert guardian is not None
    os.kill(guardian, signal.SIGTERM)
    caller.join(timeout=20)
    assert errors == []
    assert replies == [(["done"], {})]
    wait_for(lambda: not project.pid_file.exists(), message="the daemon to stop")


def test_literal_secrets_readable_by_others_warn_on_stderr_only(project: Project) -> None:
    project.write_config('password = "a literal password"\n')
    (project.root / "appd.toml").chmod(0o644)
    listed = project.appd("list")
    assert listed.returncode == 0
    assert "services.echo.password" in listed.stderr
    assert "a literal password" not in listed.stderr + listed.stdout
    assert listed.stdout.startswith("NAME")


def test_check_reports_problems_as_messages_and_list_needs_no_secret(project: Project) -> None:
    project.write_config('key = "env:APPD_TEST_KEY_THAT_IS_NOT_SET"\n')
    listed = project.appd("list")
    assert listed.returncode == 0, listed.stderr
    assert "services.EchoService" in listed.stdout
    checked = project.appd("check")
    assert checked.returncode == 1
    assert (
        "problem: appd.toml: services.echo.key: environment variable "
        "'APPD_TEST_KEY_THAT_IS_NOT_SET' is not set"
    ) in checked.stdout

    project.write_config()
    (project.root / "broken").mkdir()
    (project.root / "broken" / "services.py").write_text("import driver_missing_for_appd\n")
    broken = project.appd("check")
    assert broken.returncode == 1
    assert (
        "problem: cannot import services module in directory "
    ) in broken.stdout
    assert "ModuleNotFoundError: No module named 'driver_missing_for_appd'" in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr


def test_check_warns_about_a_key_that_looks_chosen_by_a_person(project: Project) -> None:
    project.write_config('key = "correct horse battery staple and more words"\n')
    human = project.appd("check")
    assert human.returncode == 0, human.stdout + human.stderr  # a warning, not a problem
    assert "warning: service echo: key looks chosen by a person" in human.stdout
    assert "appd keygen" in human.stdout
    assert "horse" not in human.stdout + human.stderr

    project.write_config('key = "kX3v9QmZ2xW7pL4tHq8nR1sY6bV0cJ5eA_dF-gUiOoT"\n')
    generated = project.appd("check")
    assert generated.returncode == 0
    assert "warning:" not in generated.stdout
