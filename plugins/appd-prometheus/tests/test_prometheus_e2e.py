"""The metrics endpoint of ``appd run`` scraped for real after known traffic, with
``processes = 2``, a remote error, a timeout, a busy refusal and a kill -9."""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from prometheus_fixtures import Project, Samples, value
from support import wait_for

import appd
from appd import DeadlineExceeded, RemoteError, RequestTimeout, ServiceBusy


def requests_total(samples: Samples, command: str, outcome: str) -> float:
    return value(samples, "appd_requests_total", service="echo", command=command,
                 outcome=outcome) or 0.0


def matches(project: Project, expected: dict[tuple[str, str], int]) -> Samples | None:
    samples = project.scrape()
    seen = {key: requests_total(samples, *key) for key in expected}
    return samples if seen == expected else None


@pytest.mark.slow
def test_counters_are_exact_across_processes_errors_busy_and_kill_9(project: Project) -> None:
    proc = project.run()
    pids = wait_for(project.ready_pids, timeout=30, message="both processes ready")
    expected: Counter[tuple[str, str]] = Counter()

    for i in range(10):  # fresh connections: spread over both processes
        with project.client() as client:
            assert client.call("echo", i) == i
    expected["echo", "ok"] += 10

    with project.client() as client, pytest.raises(RemoteError, match="always fails"):
        client.call("fail")
    expected["fail", "remote_error"] += 1

    with project.client(timeout=10) as client, pytest.raises(RequestTimeout):
        client.call("slow", 2.3)  # request_timeout is 2 s
    expected["slow", "timeout"] += 1

    # One process busy with a slow call: new calls land on either process; max_queue = 0, so
    # one that lands on the busy one is refused at once.
    holder = project.client(timeout=20)
    held = threading.Thread(target=holder.call, args=("slow", 1.8))
    held.start()
    try:
        busy = 0
        deadline_calls = 0
        while busy == 0 and deadline_calls < 200 and held.is_alive():
            deadline_calls += 1
            with project.client() as client:
                try:
                    assert client.call("echo", "x") == "x"
                    expected["echo", "ok"] += 1
                except ServiceBusy:
                    busy += 1
        assert busy == 1, "no call was refused while a process was busy"
        expected["echo", "busy"] += 1
        in_flight = wait_for(
            lambda: value(project.scrape(), "appd_requests_in_flight", service="echo") == 1,
            timeout=5, message="one request in flight",
        )
        assert in_flight
    finally:
        held.join(timeout=20)
        holder.close()
    expected["slow", "ok"] += 1

    # kill -9 one process: what it counted stays counted, its successor counts on.
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (p := project.ready_pids()) is not None and victim not in p, timeout=30,
             message="the killed process replaced")
    for i in range(6):
        with project.client() as client:
            assert client.call("echo", i) == i
    expected["echo", "ok"] += 6

    samples = wait_for(lambda: matches(project, dict(expected)), timeout=10,
                       message=f"counters {dict(expected)}")
    assert value(samples, "appd_busy_rejections_total", service="echo", command="echo") == 1
    assert value(samples, "appd_request_duration_seconds_count", service="echo",
                 command="echo") == expected["echo", "ok"]
    assert value(samples, "appd_request_duration_seconds_bucket", service="echo",
                 command="slow", le="+Inf") == 2
    # The slow call that timed out took at least 2.3 s; the one that was held 1.8 s.
    assert value(samples, "appd_request_duration_seconds_bucket", service="echo",
                 command="slow", le="1.0") == 0
    assert value(samples, "appd_request_duration_seconds_bucket", service="echo",
                 command="slow", le="2.5") == 2
    # The gauge is sampled a few times a second: the held call's end shows at the next sample.
    assert wait_for(
        lambda: value(project.scrape(), "appd_requests_in_flight", service="echo") == 0,
        timeout=5, message="no request in flight",
    )

    # Files are kept per process slot, not per pid: the restart reused its slot's files.
    locks = sorted(p.name for p in project.metrics_dir.glob("*.lock"))
    prefix = b"echo".hex()
    assert locks == [f"{prefix}-0-0.lock", f"{prefix}-1-0.lock"]
    assert project.stop(proc) == 0
    assert list(project.metrics_dir.glob("*.db")) == []  # cleaned at exit


def test_restarts_and_states_come_from_the_supervisors_status(project: Project) -> None:
    proc = project.run()
    pids = wait_for(project.ready_pids, timeout=30, message="both processes ready")
    os.kill(pids[1], signal.SIGKILL)
    wait_for(lambda: (p := project.ready_pids()) is not None and pids[1] not in p, timeout=30,
             message="the killed process replaced")

    def restarted() -> Samples | None:
        samples = project.scrape()
        counted = value(samples, "appd_process_restarts_total", service="echo", worker="1")
        return samples if counted == 1 else None

    samples = wait_for(restarted, timeout=10, message="one restart counted")
    assert value(samples, "appd_process_restarts_total", service="echo", worker="0") == 0
    for worker in ("0", "1"):
        assert value(samples, "appd_process_state", service="echo", worker=worker,
                     state="ready") == 1
        assert value(samples, "appd_process_state", service="echo", worker=worker,
                     state="backoff") == 0
    assert value(samples, "appd_service_state", service="echo", state="ready") == 1
    assert project.stop(proc) == 0


def test_capacity_holders_and_waiters_as_the_backend_reports_them(project: Project) -> None:
    project.write_config(capacity=True)
    proc = project.run()
    wait_for(project.ready_pids, timeout=30, message="both processes ready")
    samples = project.scrape()
    assert value(samples, "appd_capacity_limit", capacity="pdu") == 2
    assert value(samples, "appd_capacity_up", capacity="pdu") == 1
    assert value(samples, "appd_capacity_holders", capacity="pdu") == 0
    assert value(samples, "appd_capacity_waiters", capacity="pdu") == 0
    with project.client(timeout=20) as client:
        held = threading.Thread(target=client.call, args=("hold", 1.5))  # request_timeout: 2 s
        held.start()
        try:
            wait_for(
                lambda: value(project.scrape(), "appd_capacity_holders", capacity="pdu") == 1,
                timeout=10, message="one holder",
            )
        finally:
            held.join(timeout=20)
    assert value(project.scrape(), "appd_capacity_holders", capacity="pdu") == 0
    assert project.stop(proc) == 0


def test_requests_whose_deadline_passed_are_counted_expired(project: Project) -> None:
    """Both slots of the capacity held; a third call waits for one with a 0.4 s deadline and
    gives up then, unrun: ``outcome="expired"`` and ``appd_deadline_expired_total``."""
    project.write_config(processes=3, capacity=True)
    proc = project.run()
    wait_for(project.ready_pids, timeout=30, message="all processes ready")
    holders = [project.client(timeout=20) for _ in range(2)]

    def hold(client: Any) -> None:
        while True:  # until the connection lands on a process not busy holding already
            try:
                client.call("hold", 1.5)  # request_timeout is 2 s
                return
            except ServiceBusy:
                client.close()

    held = [threading.Thread(target=hold, args=(c,)) for c in holders]
    for thread in held:
        thread.start()
    try:
        wait_for(lambda: value(project.scrape(), "appd_capacity_holders", capacity="pdu") == 2,
                 timeout=10, message="both slots held")
        expired = None
        while expired is None:  # a connection may land on a busy process (max_queue = 0)
            with project.client(timeout=20) as client:
                try:
                    client.call("pid")  # connected before the deadline starts
                    with appd.deadline(0.4):
                        client.call("hold", 0)
                except ServiceBusy:
                    continue
                except DeadlineExceeded as exc:
                    expired = exc
        assert expired.not_executed

        def counted() -> Samples | None:
            samples = project.scrape()
            expired = value(samples, "appd_deadline_expired_total", service="echo",
                            command="hold")
            return samples if expired == 1 else None

        samples = wait_for(counted, timeout=10, message="the expired request counted")
        assert requests_total(samples, "hold", "expired") == 1
    finally:
        for thread in held:
            thread.join(timeout=20)
        for client in holders:
            client.close()
    assert project.stop(proc) == 0


def test_disabled_or_unconfigured_there_is_no_endpoint(project: Project) -> None:
    listed = project.appd("plugins")
    assert any(line.startswith("prometheus ") for line in listed.stdout.splitlines())
    assert "entry point appd-prometheus:prometheus" in listed.stdout
    off = project.appd("plugins", env={"APPD_DISABLE_PLUGINS": "prometheus"})
    assert not any(line.startswith("prometheus ") for line in off.stdout.splitlines())

    # Turned off by its distribution's name: its [prometheus] table is ignored.
    proc = project.run({"APPD_DISABLE_PLUGINS": "appd-prometheus"})
    wait_for(project.ready_pids, timeout=30, message="both processes ready")
    with project.client() as client:
        assert client.call("echo", 1) == 1
    with pytest.raises(urllib.error.URLError):
        project.scrape()
    assert project.stop(proc) == 0
    assert not project.metrics_dir.exists()


def test_a_wrong_setting_is_named(project: Project) -> None:
    (project.root / "appd.toml").write_text(
        (project.root / "appd.toml").read_text().replace("port = " + str(project.metrics_port),
                                                         'port = "http"')
    )
    proc = project.run()
    # A plugin's wrong table is the configuration's error: nothing starts, one line names it.
    assert proc.wait(timeout=30) == 1
    assert "appd.toml: prometheus.port: expected a port number" in project.log()
    assert project.log().count("prometheus.port") == 1
