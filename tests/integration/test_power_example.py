"""The power example (examples/power, the ``appd-power-plugin`` distribution), installed for real.

The distribution is pip-installed for this module only and uninstalled afterwards, so no other
test discovers its ``power`` and ``pdu`` services.  The PDU and the power service run in real
child processes on real sockets; clients talk to them from the test process.
"""

from __future__ import annotations

import importlib
import json
import re
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
from power_support import DIST, EXAMPLE, PACKAGE, power_example_installed
from support import wait_for

import appd
from appd import discover_services
from appd.config import load_config
from appd.errors import RemoteError
from appd.runtime.process import spawn, stop_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example installed for this module's tests, uninstalled afterwards."""
    with power_example_installed(tmp_path_factory):
        yield


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


# -- running the example's services in child processes -----------------------------------------


class Running:
    """A service started in a child process on a listener the test keeps (so it can restart
    the service on the same address)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.listener: socket.socket = service.bind()
        self.host, self.port = self.listener.getsockname()[:2]
        self.pid: int | None = None

    def start(self) -> None:
        self.pid = spawn(
            _module("demo").service_process(self.service, self.listener),
            role=self.service.name,
            keep_fds=(self.listener.fileno(),),
        )

    def stop(self) -> None:
        if self.pid is not None:
            stop_processes([self.pid], grace=10)
            self.pid = None

    def close(self) -> None:
        self.stop()
        self.listener.close()


@pytest.fixture
def start_pdu() -> Iterator[Callable[..., Running]]:
    """Start a PDU (settings as keyword arguments) on a free port; stopped at teardown."""
    started: list[Running] = []

    def start(**settings: Any) -> Running:
        pdu = _module("pdu").PduService()
        pdu.apply_settings({"host": "127.0.0.1", "port": 0, **settings})
        running = Running(pdu)
        started.append(running)
        running.start()
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture
def pdu(start_pdu: Callable[..., Running]) -> Running:
    return start_pdu(command_delay=0.002)


@pytest.fixture
def power(pdu: Running) -> Iterator[Running]:
    """A power service in its own process, using ``pdu``."""
    service = _module("services").PowerService()
    service.apply_settings(
        {"host": "127.0.0.1", "port": 0, "pdu_host": pdu.host, "pdu_port": pdu.port}
    )
    running = Running(service)
    running.start()
    yield running
    running.close()


class Line:
    """A raw session with the PDU, speaking its line protocol."""

    def __init__(self, pdu: Running) -> None:
        self.sock = socket.create_connection((pdu.host, pdu.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.read()

    def read(self) -> str:
        return self.file.readline().decode().strip()

    def ask(self, line: str) -> str:
        self.sock.sendall(f"{line}\n".encode())
        return self.read()

    def at_eof(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def lines() -> Iterator[Callable[[Running], Line]]:
    opened: list[Line] = []

    def open_line(pdu: Running) -> Line:
        line = Line(pdu)
        opened.append(line)
        return line

    yield open_line
    for line in opened:
        line.close()


def _stats(pdu: Running) -> dict[str, int]:
    """The PDU's STATS on a fresh session (which counts itself)."""
    line = Line(pdu)
    try:
        words = line.ask("STATS").split()[1:]
    finally:
        line.close()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


# -- the distribution ---------------------------------------------------------------------------


def test_entry_points_make_power_and_pdu_discoverable() -> None:
    found = {s.name: s for s in discover_services(django=False)}
    assert found["power"].source == f"entry point {DIST}:power"
    assert found["power"].cls is _module("services").PowerService
    assert found["pdu"].source == f"entry point {DIST}:pdu"
    assert found["pdu"].cls is _module("pdu").PduService


def test_importing_the_services_opens_nothing() -> None:
    services = _module("services")
    assert services.powerclient._conn is None
    assert services.PowerService()._pool is None


def test_the_example_configuration_applies_to_both_services() -> None:
    config = load_config(EXAMPLE / "appd.toml")
    assert config.enabled == ("pdu", "power")
    found = {s.name: s.cls for s in discover_services(django=False)}
    for name in ("pdu", "power"):
        service = found[name]()
        service.apply_settings(config.service(name).settings)
        assert config.service(name).processes == 1
    assert (service.pdu_host, service.pdu_port, service.port) == ("127.0.0.1", 9100, 9001)
    assert service.concurrency == service.pool_size == 5


# -- the simulated PDU --------------------------------------------------------------------------


def test_pdu_speaks_its_line_protocol(pdu: Running, lines: Callable[[Running], Line]) -> None:
    line = lines(pdu)
    assert line.greeting == "HELLO PDU 8"
    assert line.ask("ON 3") == "OK 3 ON"
    assert line.ask("status 3") == "OK 3 ON"
    assert line.ask("STATUS") == "OK OFF OFF ON OFF OFF OFF OFF OFF"
    assert line.ask("OFF 3") == "OK 3 OFF"
    assert line.ask("ON 9") == "ERR bad outlet 9: must be 1..8"
    assert line.ask("ON") == "ERR usage: ON <outlet>"
    assert line.ask("FROB 1") == "ERR unknown command FROB"
    assert line.ask("STATUS 3") == "OK 3 OFF"  # errors leave the session usable
    assert line.ask("QUIT") == "OK BYE"
    assert line.at_eof()


def test_pdu_refuses_a_sixth_connection_and_reports_its_peak(
    pdu: Running, lines: Callable[[Running], Line]
) -> None:
    five = [lines(pdu) for _ in range(5)]
    assert [line.greeting for line in five] == ["HELLO PDU 8"] * 5
    sixth = lines(pdu)
    assert sixth.greeting == "ERR busy"
    assert sixth.at_eof()
    assert five[0].ask("PEAK") == "OK PEAK 5"
    assert five[0].ask("STATS") == "OK CONNECTIONS 5 PEAK 5 REFUSED 1"
    for line in five[2:]:
        line.close()
    wait_for(
        lambda: five[0].ask("STATS").startswith("OK CONNECTIONS 2 "),
        message="the PDU to count three closed sessions out",
    )
    assert five[0].ask("PEAK") == "OK PEAK 5"
    assert five[0].ask("PEAK RESET") == "OK PEAK 2"
    assert lines(pdu).greeting == "HELLO PDU 8"  # a free slot is a slot again
    assert five[1].ask("PEAK") == "OK PEAK 3"


def test_pdu_ends_idle_sessions_and_overlong_lines(
    start_pdu: Callable[..., Running], lines: Callable[[Running], Line]
) -> None:
    pdu = start_pdu(idle_timeout=0.3)
    idle = lines(pdu)
    assert idle.read() == "ERR idle timeout"
    assert idle.at_eof()
    talker = lines(pdu)
    talker.sock.sendall(b"X" * 300 + b"\n")
    assert talker.read() == "ERR line too long"
    assert talker.at_eof()


# -- the pool -----------------------------------------------------------------------------------


def test_pool_keeps_the_pdu_within_five_sessions_under_twelve_threads(pdu: Running) -> None:
    pool = _module("pool").PduPool(pdu.host, pdu.port, 5, acquire_timeout=30)
    assert _stats(pdu)["PEAK"] == 1  # the pool opened nothing yet
    errors: list[BaseException] = []

    def work(index: int) -> None:
        for number in range(20):
            try:
                assert pool.request(f"ON {(index + number) % 8 + 1}").endswith(" ON")
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert pool.open_connections <= 5
        assert pool.request("PEAK") == "PEAK 5"
    finally:
        pool.close()


def test_a_session_notices_the_device_ended_it(start_pdu: Callable[..., Running]) -> None:
    pdu = start_pdu(idle_timeout=0.3)
    conn = _module("pool").PduConnection.open(pdu.host, pdu.port)
    try:
        assert not conn.peer_closed()  # greeted, nothing more said: open and quiet
        assert conn.request("ON 3") == "3 ON"
        assert not conn.peer_closed()  # a reply read whole leaves nothing behind
        wait_for(conn.peer_closed, message="the idle session to be seen ended")
    finally:
        conn.close()


def test_pool_replaces_sessions_the_device_ended(start_pdu: Callable[..., Running]) -> None:
    pdu = start_pdu(idle_timeout=0.3)
    pool = _module("pool").PduPool(pdu.host, pdu.port, 2)
    try:
        assert pool.request("ON 1") == "1 ON"
        wait_for(lambda: _stats(pdu)["CONNECTIONS"] == 1, message="the idle session to end")
        assert pool.request("STATUS 1") == "1 ON"
        pdu.stop()  # the device restarts on the same address: every session is gone
        pdu.start()
        assert pool.request("STATUS 1") == "1 OFF"
        assert pool.open_connections == 1
    finally:
        pool.close()


def test_pool_waits_for_a_free_session_then_times_out(pdu: Running) -> None:
    pool_module = _module("pool")
    errors = _module("errors")
    pool = pool_module.PduPool(pdu.host, pdu.port, 1, acquire_timeout=0.5)
    try:
        with pool.connection() as conn:
            assert conn.request("ON 2") == "2 ON"
            started = time.monotonic()
            with pytest.raises(errors.PoolTimeout, match=r"within 0\.5 s"):
                pool.request("STATUS 2")
            assert time.monotonic() - started >= 0.45
        assert pool.request("STATUS 2") == "2 ON"
        with pytest.raises(errors.PduError, match="bad outlet 0"):
            pool.request("ON 0")
        assert pool.request("STATUS 2") == "2 ON"  # a refused command keeps the session
        assert _stats(pdu)["PEAK"] == 2  # the pool's one session, and this one
    finally:
        pool.close()


def test_pool_waits_no_longer_than_its_callers_deadline(pdu: Running) -> None:
    """Within a deadline the pool's wait stops at it (not at acquire_timeout), and a command
    the caller has less time left for than a command takes is not sent at all."""
    pool = _module("pool").PduPool(pdu.host, pdu.port, 1, acquire_timeout=10)
    try:
        with pool.connection():
            started = time.monotonic()
            with appd.deadline(0.3), pytest.raises(appd.DeadlineExceeded, match="not executed"):
                pool.request("STATUS 2")
            assert 0.25 <= time.monotonic() - started < 2.0
        assert pool.request("ON 5") == "5 ON"
        before = _stats(pdu)
        pool.command_time = 0.5  # as if the device had slowed down to 500 ms a command
        with appd.deadline(0.2), pytest.raises(appd.DeadlineExceeded, match="not sent to the PDU"):
            pool.request("OFF 5")
        assert pool.request("STATUS 5") == "5 ON"  # not switched off: never sent
        assert _stats(pdu)["PEAK"] == before["PEAK"]
        with appd.deadline(0), pytest.raises(appd.DeadlineExceeded, match="not executed"):
            pool.request("OFF 5")  # no time left at all: not sent, whatever the estimate
        assert pool.request("STATUS 5") == "5 ON"
    finally:
        pool.close()


def test_pool_never_says_not_executed_after_a_command_may_have_reached_the_device() -> None:
    """A device that takes the command, then drops the session before answering: the retry
    finds the caller's deadline passed, and must not claim the command did not run."""
    received: list[str] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def device() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HELLO PDU 8\n")
                received.append(conn.recv(64).decode().strip())  # the pool sends one line
                time.sleep(0.3)  # past the caller's deadline, then the session ends unanswered

        thread = threading.Thread(target=device, daemon=True)
        thread.start()
        pool = _module("pool").PduPool("127.0.0.1", listener.getsockname()[1], 1)
        try:
            with appd.deadline(0.2), pytest.raises(_module("errors").PduUnavailable) as caught:
                pool.request("OFF 5")
        finally:
            pool.close()
        thread.join(10)
    assert received == ["OFF 5"]
    assert not isinstance(caught.value, appd.DeadlineExceeded)


def test_pool_forgets_a_command_time_it_has_not_measured_lately(
    pdu: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One very slow command must not stop every later one (which alone could correct the
    estimate): without a recent sample the estimate is forgotten."""
    pool_module = _module("pool")
    pool = pool_module.PduPool(pdu.host, pdu.port, 1, acquire_timeout=10)
    try:
        assert pool.request("ON 6") == "6 ON"
        pool.command_time = 30.0  # as if one command had hung for minutes
        with appd.deadline(5), pytest.raises(appd.DeadlineExceeded, match="not sent"):
            pool.request("OFF 6")
        monkeypatch.setattr(pool_module, "COMMAND_TIME_MEMORY", 0.2)
        time.sleep(0.3)  # no command timed since
        with appd.deadline(5):
            assert pool.request("OFF 6") == "6 OFF"
        assert pool.command_time < 1.0  # replaced by the new measurement, not blended into
    finally:
        pool.close()


def test_pool_blends_a_slow_command_that_began_on_a_fresh_estimate() -> None:
    """Staleness is judged when a command begins: one slow command that began 0.5 s after a
    sample is averaged in, not taken as the whole estimate."""
    pool = _module("pool").PduPool("127.0.0.1", 1, 1)
    now = time.monotonic()
    pool.command_time, pool._timed_at = 0.05, now - 5.5
    pool._time(started=now - 5.0)  # a 5 s command
    assert pool.command_time == pytest.approx(0.05 + 0.1 * (5.0 - 0.05), abs=0.01)


def test_pool_reports_an_unreachable_pdu_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = _module("pool").PduPool("127.0.0.1", port, 5)
    with pytest.raises(_module("errors").PduUnavailable, match=f"127.0.0.1:{port}"):
        pool.request("STATUS")
    assert pool.open_connections == 0


# -- the power service --------------------------------------------------------------------------


def test_power_service_switches_outlets_for_a_client_in_another_process(
    power: Running, pdu: Running, lines: Callable[[Running], Line]
) -> None:
    client = _module("services").PowerClient(host=power.host, port=power.port, timeout=30)
    with client:
        assert client.poweron(3) == "on"
        assert lines(pdu).ask("STATUS 3") == "OK 3 ON"  # the device itself switched
        assert client.status(3) == "on"
        assert client.call("status", "3") == "on"  # digits as a string, as `appd call` sends
        assert client.poweroff(3) == "off"
        assert client.cycle(5) == "on"
        states = client.status()
        assert states == {str(n): "on" if n == 5 else "off" for n in range(1, 9)}
        assert 1 <= client.pdu_peak() <= 5


@pytest.mark.parametrize("outlet", [0, 9, -1, "x", True, None, 2.5])
def test_power_service_rejects_a_bad_outlet_and_keeps_serving(
    power: Running, outlet: object
) -> None:
    client = _module("services").PowerClient(host=power.host, port=power.port, timeout=30)
    with client:
        with pytest.raises(RemoteError) as info:
            client.call("poweron", outlet)
        assert info.value.remote_type == "InvalidOutlet"
        assert "outlet must be an integer from 1 to 8" in info.value.remote_message
        assert client.poweron(1) == "on"


@pytest.mark.slow
def test_power_service_reports_an_unreachable_pdu(power: Running, pdu: Running) -> None:
    pdu.stop()
    client = _module("services").PowerClient(host=power.host, port=power.port, timeout=30)
    with client:
        with pytest.raises(RemoteError) as info:
            client.poweron(1)
        assert info.value.remote_type in ("PduUnavailable", "PduBusy")
        pdu.start()
        assert client.poweron(1) == "on"


# -- the load demo ------------------------------------------------------------------------------


def _run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m appd_power.demo ARGS`` run from outside the checkout (``-m`` puts the working
    directory first on sys.path: the installed packages must be the ones used)."""
    return subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.demo", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd="/",
    )


def _demo(*args: str) -> dict[str, Any]:
    result = _run_demo("--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_demo_with_twelve_clients_has_no_errors_and_pdu_peak_at_most_five() -> None:
    report = _demo("--clients", "12", "--requests", "20", "--spawn")
    assert report["spawned"] is True
    assert report["requests"] == 240
    assert report["errors"] == 0, report["error_messages"]
    assert 1 <= report["pdu_peak"] <= 5
    assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"]
    assert report["ok"] is True


def test_demo_drives_an_already_running_service(power: Running) -> None:
    report = _demo(
        "--clients", "6", "--requests", "10", "--no-spawn",
        "--host", power.host, "--port", str(power.port),
    )
    assert report["spawned"] is False
    assert report["address"] == f"{power.host}:{power.port}"
    assert (report["requests"], report["errors"]) == (60, 0)
    assert report["pdu_peak"] <= 5


def test_demo_without_a_service_and_without_spawning_fails_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _run_demo("--no-spawn", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr


# -- docs/cli.md: the documented outputs are what the commands print ----------------------------

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

#: The documented commands, in an order that makes each documented output true.
DOCUMENTED_ORDER = [
    "appd check",
    "appd list",
    "appd start",
    "appd call power poweron 3",
    "appd call power explode 3",
    "appd status",
    "appd stop",
    "appd stop",
]


def documented_outputs() -> list[tuple[str, str]]:
    """``(command, output)`` for every ``$ appd …`` line of docs/cli.md's console blocks."""
    import re

    pairs: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", CLI_DOC.read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            else:
                pairs[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in pairs]


def normalized(text: str, replacements: dict[str, str]) -> str:
    import re

    for old, new in replacements.items():
        text = text.replace(old, new)
    text = re.sub(r"\bpid( |=)\d+", r"pid\1N", text)
    text = re.sub(r"\b(uptime|requests)=\d+", r"\1=N", text)
    text = re.sub(r"\bheartbeat=[\d.]+s", "heartbeat=Ns", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def test_the_documented_cli_outputs_are_what_the_commands_print(tmp_path: Path) -> None:
    from support import descendants, free_port, kill_pids

    documented = documented_outputs()
    assert sorted(command for command, _ in documented) == sorted(DOCUMENTED_ORDER)
    pdu_port, power_port = free_port(), free_port()
    config = (EXAMPLE / "appd.toml").read_text()
    # Whole settings in one pass, not digits: a free port may itself contain "9001" or "9100".
    ports = {"9100": pdu_port, "9001": power_port}
    config, replaced = re.subn(
        r"^((?:pdu_)?port) = (9100|9001)$", lambda m: f"{m[1]} = {ports[m[2]]}", config,
        flags=re.MULTILINE,
    )
    assert replaced == 3, config
    (tmp_path / "appd.toml").write_text(config)
    replacements = {
        "/home/me/appd/examples/power": str(tmp_path),
        "127.0.0.1:9100": f"127.0.0.1:{pdu_port}",
        "127.0.0.1:9001": f"127.0.0.1:{power_port}",
    }
    before = set(descendants())
    try:
        for command in DOCUMENTED_ORDER:
            expected = next(out for cmd, out in documented if cmd == command)
            documented.remove((command, expected))
            done = subprocess.run(
                [sys.executable, "-m", "appd", *command.split()[1:]],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )
            assert normalized(done.stdout + done.stderr, {}) == normalized(
                expected, replacements
            ), command
    finally:
        kill_pids(set(descendants()) - before)
