"""appd-systemd under ``appd run``, as systemd would run it: a real notification socket, real
signals, real passed sockets, and the ``appd`` command line."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port, wait_for
from systemd_fixtures import (
    NotifySocket,
    Project,
)

HERE = Path(__file__).resolve().parent
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                     "LISTEN_PID", "LISTEN_FDNAMES")


def pids_of(status: dict[str, object], name: str) -> list[int]:
    services = status.get("services", {})
    assert isinstance(services, dict)
    return [p["pid"] for p in services[name]["processes"] if p["pid"]]


def all_ready(project: Project) -> bool:
    status = project.status()
    services = status.get("services", {})
    return bool(services) and all(s["state"] == "ready" for s in services.values())


def test_appd_plugins_lists_it_and_the_variable_turns_it_off(project: Project) -> None:
    listed = project.appd("plugins")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("systemd "))
    assert "appd_status" in line and "appd_listener" in line and "appd_add_commands" in line
    for name in ("systemd", "appd-systemd"):
        off = project.appd("plugins", env={"APPD_DISABLE_PLUGINS": name})
        assert off.returncode == 0, off.stderr
        assert not any(line.startswith("systemd ") for line in off.stdout.splitlines())
        assert "systemd" in off.stdout  # listed among the disabled names


def test_a_disabled_plugins_table_does_not_break_the_configuration(project: Project) -> None:
    project.write_config("\n[systemd]\nwatchdog_sec = 10\n")
    assert project.appd("check").returncode == 0
    off = project.appd("check", env={"APPD_DISABLE_PLUGINS": "systemd"})
    assert off.returncode == 0, off.stdout + off.stderr
    assert project.appd("systemd-unit", env={"APPD_DISABLE_PLUGINS": "systemd"}).returncode == 2


def test_systemd_unit_prints_a_notify_unit_for_this_configuration(project: Project) -> None:
    project.write_config("\n[systemd]\nwatchdog_sec = 20\n")
    result = project.appd("systemd-unit", "--user", "appd")
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    lines = set(unit.splitlines())
    for expected in (
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=20",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=appd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"WorkingDirectory={project.root}",
        f"Environment=APPD_CONFIG={project.root / 'appd.toml'}",
        "TimeoutStopSec=13",  # shutdown_grace (3) + 10
        "Description=appd services: echo",
        "WantedBy=multi-user.target",
    ):
        assert expected in lines, (expected, unit)
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert exec_start.endswith(" run") and "appd" in exec_start
    assert f"ReadWritePaths={project.root}" in unit
    override = project.appd("systemd-unit", "--watchdog-sec", "0")
    assert "WatchdogSec=0" in override.stdout.splitlines()
    if shutil.which("systemd-analyze"):
        path = project.root / "appd-test.service"
        path.write_text(unit.replace("User=appd\n", ""))
        verified = subprocess.run(
            ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
        )
        assert verified.returncode == 0, verified.stderr


def test_a_wrong_systemd_setting_is_named(project: Project) -> None:
    project.write_config("\n[systemd]\nwatchdog_secs = 20\n")
    result = project.appd("systemd-unit")
    assert result.returncode == 1
    assert "systemd.watchdog_secs: unknown setting" in result.stderr
    project.write_config('\n[systemd]\nwatchdog_sec = "soon"\n')
    result = project.appd("systemd-unit")
    assert result.returncode == 1
    assert "systemd.watchdog_sec" in result.stderr


def test_service_processes_do_not_see_systemds_variables(
    project: Project, notify_socket: NotifySocket
) -> None:
    proc = project.run(
        {"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "10000000",
         "LISTEN_FDS": "0", "LISTEN_PID": "1", "LISTEN_FDNAMES": ""}
    )
    wait_for(lambda: all_ready(project), timeout=30, message="services ready")
    with project.client() as client:
        seen = client.call("environment")
        inherited = client.call("child_environment")
    assert seen == dict.fromkeys(SYSTEMD_VARIABLES)
    assert not set(inherited) & set(SYSTEMD_VARIABLES)  # nor do the processes it starts
    assert project.stop(proc) == 0


def test_without_notify_socket_nothing_is_sent_and_appd_runs(project: Project) -> None:
    proc = project.run()
    wait_for(lambda: all_ready(project), timeout=30, message="services ready")
    with project.client() as client:
        assert client.call("echo", "hi") == "hi"
    assert project.stop(proc) == 0
    assert "systemd notified" not in project.log()


@pytest.mark.slow
def test_ready_only_after_every_service_is_ready_then_reload_then_stop(
    project: Project, notify_socket: NotifySocket
) -> None:
    project.ports["slow"] = free_port()
    project.write_config()
    proc = project.run({"NOTIFY_SOCKET": notify_socket.name, "SLOW_SETUP": "0.5"})
    ready = notify_socket.wait_for("READY", "1", timeout=30)
    assert ready.fields["STATUS"] == "2/2 services ready"
    before = [m for m in notify_socket.messages if m.at <= ready.at and "STATUS" in m.fields]
    assert any(m.fields["STATUS"].startswith(("0/2", "1/2")) for m in before), before
    assert all(s["state"] == "ready" for s in project.status()["services"].values())
    old = pids_of(project.status(), "slow")

    proc.send_signal(signal.SIGHUP)
    reloading = notify_socket.wait_for("RELOADING", "1", timeout=30)
    wait_for(lambda: len(notify_socket.with_key("READY", "1")) == 2, timeout=60,
             message="READY=1 after the reload")
    again = notify_socket.with_key("READY", "1")[1]
    assert again.at >= reloading.at
    assert len(notify_socket.with_key("RELOADING", "1")) == 1  # once per reload
    assert not set(pids_of(project.status(), "slow")) & set(old)

    proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING", "1", timeout=30)
    assert proc.wait(timeout=30) == 0
    assert len(notify_socket.with_key("STOPPING", "1")) == 1


@pytest.mark.slow
def test_watchdog_pings_stop_while_a_service_process_is_stopped(
    project: Project, notify_socket: NotifySocket
) -> None:
    interval = 1.0  # WATCHDOG_USEC / 2
    project.write_config(processes=2)
    proc = project.run({"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "2000000"})
    notify_socket.wait_for("READY", "1", timeout=30)
    wait_for(lambda: len(notify_socket.with_key("WATCHDOG", "1")) >= 3, timeout=10,
             message="regular pings")
    pings = notify_socket.with_key("WATCHDOG", "1")
    gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]
    assert max(gaps) < interval * 2, gaps  # what systemd tolerates
    victim = pids_of(project.status(), "echo")[1]
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        time.sleep(2 * interval + 2.0)
        late = [m for m in notify_socket.with_key("WATCHDOG") if m.at > stopped_at + 2 * interval]
        assert late == [], "pings went on while a service process was stopped"
    finally:
        os.kill(victim, signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_for(
        lambda: [m for m in notify_socket.with_key("WATCHDOG") if m.at > resumed_at],
        timeout=4 * interval, message="pings after SIGCONT",
    )
    assert project.stop(proc) == 0


def test_a_passed_socket_serves_instead_of_binding(project: Project) -> None:
    with socket.socket() as passed:
        passed.bind(("127.0.0.1", 0))
        passed.listen()
        port = passed.getsockname()[1]
        proc = project.run(
            argv=[sys.executable, str(HERE / "socket_activate.py"), str(passed.fileno()), "echo",
                  "--", sys.executable, "-m", "appd", "run"],
            pass_fds=[passed.fileno()],
        )
        wait_for(lambda: all_ready(project), timeout=30, message="services ready")
        with project.client(port=port) as client:
            assert client.call("echo", "through the passed socket") == "through the passed socket"
            seen = client.call("environment")
        assert seen == dict.fromkeys(SYSTEMD_VARIABLES)
        with socket.socket() as probe:  # the configured port was never bound
            probe.bind(("127.0.0.1", project.ports["echo"]))
        assert project.stop(proc) == 0


@pytest.mark.skipif(
    not shutil.which("systemd-socket-activate"), reason="no systemd-socket-activate"
)
@pytest.mark.parametrize("named", [True, False])
def test_systemd_socket_activate_starts_appd(project: Project, named: bool) -> None:
    port = free_port()  # not the configured port: only the passed socket can serve it
    name = ["--fdname=echo"] if named else []
    proc = project.run(
        argv=["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *name,
              sys.executable, "-m", "appd", "run"],
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return False
        return True

    # systemd-socket-activate starts appd on the first connection, as systemd would.
    wait_for(listening, timeout=20, message="systemd-socket-activate listening")
    with project.client(port=port) as client:
        assert client.call("echo", "activated") == "activated"
    assert project.stop(proc) == 0
