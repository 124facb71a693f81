"""The supervisor under reloads, crashes and shutdowns: real processes, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
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
from supervision import KEY, Callers, Project, project_in
from support import free_port, pid_alive, wait_for

from appd import AsyncSecureSocketAppClient, SecureSocketAppClient
from appd.errors import (
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    RemoteError,
    RequestTimeout,
)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        yield proj


def reload_events(project: Project) -> list[tuple[datetime.datetime, str]]:
    """When each reload started and finished, by the supervisor's log."""
    return [
        (datetime.datetime.fromisoformat(r["timestamp"]), r["event"]) for r in project.records()
        if r.get("event") in ("reload started", "reload finished")
    ]


def reload_sequence(project: Project) -> list[str]:
    return [event for _, event in reload_events(project)]


def reload_started_after_and_finished(project: Project, moment: datetime.datetime) -> bool:
    """A reload started after ``moment``, and none is under way."""
    events = reload_events(project)
    return bool(events) and events[-1][1] == "reload finished" and any(
        at > moment and event == "reload started" for at, event in events
    )


def sighups_that_reloaded_nothing(
    project: Project, hups: list[datetime.datetime]
) -> list[datetime.datetime]:
    """The SIGHUPs sent at ``hups`` that started no reload: each must start one before the
    next is sent, unless it arrived during a reload (then it queued one more, which two
    SIGHUPs during one reload share, as the supervisor documents)."""
    events = reload_events(project)
    ignored = []
    for sent, following in zip(hups, [*hups[1:], None], strict=True):
        under_way = [event for at, event in events if at < sent][-1:] == ["reload started"]
        started = any(
            event == "reload started" and sent < at and (following is None or at < following)
            for at, event in events
        )
        if not (started or under_way):
            ignored.append(sent)
    return ignored


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_calls_never_fail_while_sighup_arrives_every_3_seconds(
    project: Project, processes: int
) -> None:
    project.write_config({"alpha": {"processes": processes}})
    project.run()
    before = set(project.pids("alpha"))
    hups: list[datetime.datetime] = []
    with Callers(project, "alpha", 8) as callers:
        wait_for(lambda: callers.replies > 50, message="the callers to get going")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < deadline:
                hups.append(datetime.datetime.now(datetime.UTC))
                project.hup()
        # A SIGHUP that arrives during a reload queues one more, after it: on a loaded machine
        # the last may still be queued or under way.
        wait_for(lambda: reload_started_after_and_finished(project, hups[-1]),
                 timeout=30, message="the reload of the last SIGHUP")
    assert callers.failures == []
    assert max(callers.gaps) < 1.0, callers.gaps
    assert callers.pids - before, "no call reached a process started by a reload"
    assert len(hups) == 4
    assert sighups_that_reloaded_nothing(project, hups) == []
    sequence = reload_sequence(project)
    assert sequence[::2] == ["reload started"] * len(sequence[::2])
    assert sequence[1::2] == ["reload finished"] * len(sequence[1::2])


@pytest.mark.slow
def test_sixteen_callers_sighup_every_1_5_seconds_five_runs(tmp_path: Path) -> None:
    """Five runs at once (each its own supervisor): no call fails in any of them."""
    with contextlib.ExitStack() as stack:
        projects = []
        for run in range(5):
            root = tmp_path / f"run{run}"
            root.mkdir()
            project = stack.enter_context(project_in(root))
            project.write_config({"alpha": {"processes": 2}})
            project.run()
            projects.append(project)
        callers = [stack.enter_context(Callers(p, "alpha", 16, pause=0.02)) for p in projects]
        for c in callers:
            wait_for(lambda c=c: c.replies > 20, message="the callers to get going")
        hups: list[list[datetime.datetime]] = [[] for _ in projects]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1.5)
            for project, sent in zip(projects, hups, strict=True):
                sent.append(datetime.datetime.now(datetime.UTC))
                project.hup()
        # Reloads under this load take seconds each: several SIGHUPs share a queued one, and
        # the last may still be queued or under way.
        for project, sent in zip(projects, hups, strict=True):
            wait_for(lambda p=project, last=sent[-1]: reload_started_after_and_finished(p, last),
                     timeout=60, message="the reload of the last SIGHUP")
        for c in callers:
            c.__exit__(None, None, None)
        for index, c in enumerate(callers):
            assert c.failures == [], f"run {index}: {c.failures[:3]}"
            assert c.replies > 100
        for index, (project, sent) in enumerate(zip(projects, hups, strict=True)):
            assert len(sent) >= 12
            assert sighups_that_reloaded_nothing(project, sent) == [], f"run {index}"
            assert reload_sequence(project).count("reload started") >= 3


def test_a_new_client_during_a_sigterm_drain_is_answered_or_refused_at_once(
    project: Project,
) -> None:
    project.write_config({"alpha": {"processes": 1}})
    proc = project.run()
    slow_done: list[object] = []

    def slow() -> None:
        with project.client("alpha") as client:
            slow_done.append(client.call("slow", 3))

    caller = threading.Thread(target=slow)
    caller.start()
    wait_for(lambda: project.in_flight("slow"), message="the slow call to be in flight")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: project.status().get("state") == "stopping", message="the drain to start")
    for _ in range(5):
        started = time.monotonic()
        try:
            with project.client("alpha", connect_timeout=5) as client:
                client.call("pid")
        except ConnectFailed:
            pass
        assert time.monotonic() - started < 0.1
    caller.join(timeout=20)
    assert slow_done == ["done"]
    assert proc.wait(timeout=20) == 0


def test_a_fatal_service_refuses_calls_at_once_and_status_says_so(project: Project) -> None:
    project.write_config(
        {
            "alpha": {},
            "broken": {"restart_interval": 0.05, "restart_max_interval": 0.1,
                       "restart_max": 2, "restart_window": 60},
        }
    )
    with project.log.open("ab") as err:
        project.proc = subprocess.Popen(
            [sys.executable, "-m", "appd", "run"], cwd=project.root, env=project.env(),
            stdout=subprocess.DEVNULL, stderr=err,
        )
    wait_for(lambda: project.status().get("services", {}).get("broken", {}).get("state")
             == "fatal", timeout=30, message="broken to end FATAL")
    wait_for(lambda: project.status()["services"]["broken"]["listening"] is False,
             message="the status to say broken's listener is closed")
    assert project.status()["services"]["alpha"]["listening"] is True
    text = project.appd("status")
    assert "broken: fatal" in text.stdout and "listener closed" in text.stdout
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(ConnectFailed), project.client("broken") as client:
            client.call("pid")
        assert time.monotonic() - started < 0.1
    with project.client("alpha") as client:
        assert client.call("pid") > 0


def test_forked_processes_find_the_handshake_keys_derived_first_start_and_restart(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor derives a service's handshake keys (scrypt, about 0.1 s) before it forks
    the service's processes: neither the first processes nor one restarted after a crash spend
    that time before they answer (the services module records each derivation's process)."""
    record = project.root / "derivations.txt"
    monkeypatch.setenv("RECORD_KEY_DERIVATIONS", str(record))
    project.write_config({"alpha": {"processes": 2, "restart_interval": 0.05}})
    project.run()
    first = project.pids("alpha")
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: project.all_ready() and first[0] not in project.pids("alpha"),
             message="the killed process to be replaced")
    for _ in range(4):
        with project.client("alpha") as client:
            assert client.call("pid") in project.pids("alpha")
    assert project.proc is not None
    assert record.read_text().split() == [str(project.proc.pid)]  # once, in the supervisor


def test_two_sighups_100_ms_apart_replace_every_process_at_most_twice(
    project: Project,
) -> None:
    project.write_config({"alpha": {"processes": 2}, "beta": {"processes": 1}})
    project.run()
    first = {name: project.pids(name) for name in ("alpha", "beta")}
    started_before = len([r for r in project.records()
                          if r.get("event") == "service process started"])
    project.hup()
    time.sleep(0.1)
    project.hup()

    def settled() -> bool:
        status = project.status()
        return (status.get("state") == "running" and status.get("reloads", 0) >= 2
                and project.all_ready())

    wait_for(settled, timeout=60, message="both reloads to end")
    for name, pids in first.items():
        now = project.pids(name)
        assert len(now) == len(pids) and not set(now) & set(pids)
    starts = [r for r in project.records() if r.get("event") == "service process started"]
    per_worker: dict[tuple[str, int], int] = {}
    for record in starts[started_before:]:
        key = (record["service"], record["worker"])
        per_worker[key] = per_worker.get(key, 0) + 1
    assert set(per_worker) == {("alpha", 0), ("alpha", 1), ("beta", 0)}
    assert all(1 <= count <= 2 for count in per_worker.values()), per_worker
    sequence = reload_sequence(project)
    assert sequence == ["reload started", "reload finished"] * (len(sequence) // 2)
    assert any(r.get("event") == "reload requested during a reload; queued to follow it"
               for r in project.records())


@pytest.mark.slow
def test_a_crash_elsewhere_is_restarted_while_a_reload_drains_a_long_request(
    project: Project,
) -> None:
    project.write_config(
        {"alpha": {"processes": 1}, "beta": {"processes": 1, "restart_interval": 1.0}}
    )
    project.run()
    answers: list[object] = []

    def slow() -> None:
        with project.client("alpha") as client:
            answers.append(client.call("slow", 5))

    caller = threading.Thread(target=slow)
    caller.start()
    wait_for(lambda: project.in_flight("slow"), message="the slow call to be in flight")
    project.hup()

    def alpha_draining() -> bool:
        status = project.status()
        services = status.get("services", {})
        return (status.get("state") == "running" and bool(services["alpha"]["draining"])
                and services["beta"]["state"] == "ready")

    wait_for(alpha_draining, timeout=20, message="alpha to drain after the reload")
    [victim] = project.pids("beta")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    with project.client("beta", connect_timeout=0.2, timeout=0.5) as client:
        while True:
            try:
                pid = client.call("pid")
            except (ConnectFailed, ConnectionLost, RequestTimeout):
                assert time.monotonic() - killed < 1.5, "beta did not come back in time"
                time.sleep(0.02)
                continue
            break
    assert pid != victim
    assert time.monotonic() - killed < 1.5
    assert project.status()["services"]["alpha"]["draining"], "the drain was over already"
    caller.join(timeout=20)
    assert answers == ["done"]


def check_service_logs(project: Project, records: list[dict[str, Any]], raw: str) -> None:
    """The handler's log line, its traceback and failed authentications, each naming the
    service process they came from."""
    said = [r for r in records if r.get("event") == "handler says hello operator"]
    assert len(said) == 1, raw[-3000:]
    [pid] = project.pids("alpha")
    assert said[0]["service"] == "alpha" and said[0]["worker"] == 0 and said[0]["pid"] == pid
    raised = [r for r in records if r.get("event") == "handler raised"]
    assert len(raised) == 1
    assert raised[0]["service"] == "alpha" and raised[0]["worker"] == 0
    assert raised[0]["pid"] == pid
    assert "Traceback" in raised[0]["exception"] and "ValueError: kaboom" in raised[0]["exception"]
    failed = [r for r in records if r.get("event") == "authentication failed"]
    assert len(failed) == 2
    assert all(r["service"] == "alpha" and r["pid"] == pid for r in failed)
    printed = [r for r in records if "printed by the handler" in str(r.get("event"))]
    assert len(printed) == 1, raw[-3000:]
    assert printed[0]["stream"] == "stdout" and printed[0]["logger"] == "appd.output"
    assert printed[0]["service"] == "alpha" and printed[0]["worker"] == 0
    assert printed[0]["pid"] == pid


def provoke_logs(project: Project) -> None:
    with project.client("alpha") as client:
        assert client.call("say", "hello operator") == "hello operator"
        with pytest.raises(RemoteError):
            client.call("fail", "kaboom")
    for _ in range(2):
        with pytest.raises(AuthenticationFailed), SecureSocketAppClient(
            "127.0.0.1", project.port("alpha"), "user", "wrong password", KEY
        ) as intruder:
            intruder.call("pid")


def test_service_logs_reach_appd_runs_standard_error(project: Project) -> None:
    project.write_config({"alpha": {}})
    project.run()
    provoke_logs(project)
    wait_for(lambda: len([r for r in project.records()
                          if r.get("event") == "authentication failed"]) >= 2,
             message="the log lines to arrive")
    check_service_logs(project, project.records(), project.log.read_text())


def test_service_logs_reach_appd_starts_log_file(project: Project) -> None:
    project.write_config({"alpha": {}})
    started = project.appd("start")
    assert started.returncode == 0, started.stderr
    try:
        provoke_logs(project)
        log_file = project.root / "run" / "appd.log"
        wait_for(lambda: len([r for r in project.records(log_file)
                              if r.get("event") == "authentication failed"]) >= 2,
                 message="the log lines to arrive")
        check_service_logs(project, project.records(log_file), log_file.read_text())
    finally:
        assert project.appd("stop").returncode == 0


ADDED_COMMAND = '''

    @command
    def added(self):
        return "added by a reload"
'''


def test_sighup_loads_new_code_new_services_and_changed_settings(project: Project) -> None:
    project.write_config({"alpha": {}, "beta": {}})
    project.run()
    with project.client("alpha") as client, pytest.raises(RemoteError, match="UnknownCommand"):
        client.call("added")
    source = project.root / "services.py"
    source.write_text(
        source.read_text().replace("class AlphaService(Base):\n    pass\n",
                                   "class AlphaService(Base):" + ADDED_COMMAND)
    )
    project.write_config(
        {"alpha": {"greeting": "bonjour", "processes": 2}, "gamma": {}}
    )
    beta = project.pids("beta")
    project.hup()
    wait_for(lambda: project.status().get("reloads") == 1 and project.all_ready()
             and "beta" not in project.status()["services"], timeout=30,
             message="the reload to finish")
    with project.client("alpha") as client:
        assert client.call("added") == "added by a reload"
        assert client.call("greet") == "bonjour"
    assert len(project.pids("alpha")) == 2
    with project.client("gamma") as client:
        assert client.call("greet") == "hello"
    wait_for(lambda: not any(pid_alive(p) for p in beta), message="beta's process to stop")
    with pytest.raises(ConnectFailed), project.client("beta") as client:
        client.call("pid")


def test_twelve_connections_spread_over_four_processes(project: Project) -> None:
    project.write_config({"alpha": {"processes": 4}})
    project.run()
    clients = [project.client("alpha") for _ in range(12)]
    try:
        served = [client.call("pid") for client in clients]
    finally:
        for client in clients:
            client.close()
    counts = {pid: served.count(pid) for pid in set(served)}
    assert set(counts) <= set(project.pids("alpha"))
    assert max(counts.values()) <= 4, counts


def test_stop_first_stops_the_old_process_before_starting_the_new(project: Project) -> None:
    project.write_config({"alpha": {"reload": "stop-first"}, "beta": {}})
    project.run()
    [old] = project.pids("alpha")
    [old_beta] = project.pids("beta")
    project.hup()
    wait_for(lambda: project.status().get("reloads") == 1 and project.all_ready(),
             timeout=30, message="the reload to finish")
    [new] = project.pids("alpha")
    [new_beta] = project.pids("beta")

    def events() -> list[tuple[Any, Any]]:
        return [(r.get("event"), r.get("pid")) for r in project.records()]

    wait_for(lambda: ("service process stopped", old_beta) in events(),
             message="beta's old process to drain and stop")
    seen = events()
    assert seen.index(("service process stopped", old)) < seen.index(
        ("service process started", new)
    )
    # The default overlaps: the new process starts before the old one stops.
    assert seen.index(("service process started", new_beta)) < seen.index(
        ("service process stopped", old_beta)
    )


def test_appd_reload_replaces_a_daemons_processes_and_waits_until_ready(
    project: Project,
) -> None:
    project.write_config({"alpha": {"processes": 2}})
    started = project.appd("start")
    assert started.returncode == 0, started.stderr
    try:
        before = set(project.pids("alpha"))
        reloaded = project.appd("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "appd reloaded" in reloaded.stdout
        status = project.status()
        assert status["reloads"] == 1 and status["state"] == "running"
        after = set(project.pids("alpha"))
        assert len(after) == 2 and not after & before
        with project.client("alpha") as client:
            assert client.call("pid") in after
    finally:
        assert project.appd("stop").returncode == 0
    assert project.appd("reload").returncode == 3


def test_status_documents_heartbeats_and_a_stopped_process_stops_beating(
    project: Project,
) -> None:
    project.write_config({"alpha": {}, "beta": {"processes": 2}})
    project.run()
    status = project.status()
    assert set(status) >= {"state", "pid", "started_at", "uptime", "services"}
    assert status["state"] == "running"
    for service in status["services"].values():
        assert set(service) >= {"state", "restarts", "requests", "processes", "listening"}
        for proc in service["processes"]:
            assert set(proc) >= {"worker", "state", "pid", "restarts", "uptime", "requests",
                                 "heartbeat_age"}
            assert proc["heartbeat_age"] is not None and proc["heartbeat_age"] < 1.0
    [victim] = project.pids("alpha")
    os.kill(victim, signal.SIGSTOP)
    try:
        def age() -> float:
            [proc] = project.status()["services"]["alpha"]["processes"]
            return float(proc["heartbeat_age"])

        wait_for(lambda: age() > 1.5, message="the stopped process's heartbeat to age")
        assert all(p["heartbeat_age"] < 1.0
                   for p in project.status()["services"]["beta"]["processes"])
    finally:
        os.kill(victim, signal.SIGCONT)
    wait_for(lambda: age() < 1.0, message="the heartbeat to resume")
    text = project.appd("status")
    assert text.returncode == 0
    assert "alpha: ready" in text.stdout and "heartbeat=" in text.stdout


def test_a_reload_finds_the_configuration_from_another_run_dir(project: Project) -> None:
    (project.root / "var").mkdir()
    project.write_config({"alpha": {}}, extra='run_dir = "var"')
    proc = project.run_in("var")
    [before] = project.pids("alpha", under="var")
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: project.status("var").get("reloads") == 1
             and project.status("var")["state"] == "running", timeout=30,
             message="the reload to finish")
    [after] = project.pids("alpha", under="var")
    assert after != before
    with project.client("alpha") as client:
        assert client.call("pid") == after


def test_a_reload_that_lowers_processes_stops_the_extra_ones(project: Project) -> None:
    project.write_config({"alpha": {"processes": 3}})
    project.run()
    before = project.pids("alpha")
    assert len(before) == 3
    project.write_config({"alpha": {"processes": 1}})
    project.hup()
    wait_for(lambda: project.status().get("reloads") == 1 and project.all_ready()
             and not project.status()["services"]["alpha"]["draining"], timeout=30,
             message="the reload to finish")
    after = project.pids("alpha")
    assert len(after) == 1 and after[0] not in before
    wait_for(lambda: not any(pid_alive(p) for p in before), message="the old processes to stop")
    with project.client("alpha") as client:
        assert client.call("pid") == after[0]


def test_async_clients_see_no_error_across_reloads(project: Project) -> None:
    project.write_config({"alpha": {"processes": 1}})
    project.run()
    failures: list[BaseException] = []
    replies = 0

    async def call_in_a_loop(stop: asyncio.Event) -> None:
        nonlocal replies
        async with AsyncSecureSocketAppClient(
            "127.0.0.1", project.port("alpha"), "user", "user password", KEY, timeout=20
        ) as client:
            while not stop.is_set():
                try:
                    await client.call("pid")
                    replies += 1
                except Exception as exc:  # every failure counts
                    failures.append(exc)
                await asyncio.sleep(0.005)

    async def main() -> None:
        stop = asyncio.Event()
        callers = [asyncio.create_task(call_in_a_loop(stop)) for _ in range(4)]
        for _ in range(3):
            await asyncio.sleep(1.0)
            project.hup()
        await asyncio.sleep(1.0)
        for _ in range(200):
            if project.status().get("reloads", 0) >= 2 and project.status()["state"] == "running":
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*callers)

    asyncio.run(main())
    assert failures == []
    assert replies > 100
    assert project.status().get("reloads", 0) >= 2


LISTENER_PLUGIN = '''
import socket

from appd import hookimpl

PORT = {port}


@hookimpl
def appd_listener(service):
    if service.name != "alpha":
        return None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", PORT))
    sock.listen(16)
    return sock
'''


def test_the_supervisor_serves_on_a_listener_a_plugin_gives_and_fires_its_hooks(
    project: Project,
) -> None:
    given = free_port()
    (project.root / "listener_plugin.py").write_text(LISTENER_PLUGIN.format(port=given))
    project.write_config({"alpha": {}}, plugins=("listener_plugin",))
    project.run()
    with SecureSocketAppClient("127.0.0.1", given, "user", "user password", KEY) as client:
        assert client.call("pid") == project.pids("alpha")[0]
    with pytest.raises(ConnectFailed), project.client("alpha") as client:
        client.call("pid")  # the service's own port was never bound
    project.hup()
    wait_for(lambda: project.status().get("reloads") == 1, message="the reload to finish")
    wait_for(lambda: len(project.hook_calls("appd_reload")) == 2, message="appd_reload end")
    assert [c["kwargs"]["phase"] for c in project.hook_calls("appd_reload")] == [
        "'begin'", "'end'"
    ]
    states = {c["kwargs"]["state"] for c in project.hook_calls("appd_status")}
    assert {"'running'", "'reloading'"} <= states


def test_a_reload_that_does_not_load_replaces_nothing_and_says_why(project: Project) -> None:
    project.write_config({"alpha": {"processes": 2}})
    assert project.appd("start").returncode == 0
    try:
        before = sorted(project.pids("alpha"))
        project.write_config({"alpha": {"processes": 2, "concurrency": 0}})
        reloaded = project.appd("reload")
        assert reloaded.returncode == 1
        assert "services.alpha.concurrency: expected a positive integer, got 0" in (
            reloaded.stderr
        )
        status = project.status()
        assert status["reload_failures"] == 1 and status["reloads"] == 0
        assert "services.alpha.concurrency" in status["last_reload_error"]
        assert status["services"]["alpha"]["restarts"] == 0
        assert sorted(project.pids("alpha")) == before
        with project.client("alpha") as client:
            assert client.call("pid") in before
        project.write_config({"alpha": {"processes": 2}})
        assert project.appd("reload").returncode == 0
        fixed = project.status()
        assert fixed["reloads"] == 1 and fixed["last_reload_error"] is None
    finally:
        assert project.appd("stop").returncode == 0


def test_a_disabled_service_is_in_the_status_and_refused_at_once(project: Project) -> None:
    project.write_config({"alpha": {}, "beta": {"enabled": False}})
    assert project.appd("start").returncode == 0
    try:
        status = project.status()
        assert status["disabled"] == ["beta"] and "beta" not in status["services"]
        started = time.monotonic()
        with pytest.raises(ConnectFailed), project.client("beta") as client:
            client.call("pid")
        assert time.monotonic() - started < 0.1
        assert "beta: disabled  (not running: connections refused)" in (
            project.appd("status").stdout
        )
    finally:
        assert project.appd("stop").returncode == 0
