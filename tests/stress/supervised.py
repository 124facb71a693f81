"""A project run by the real supervisor (``appd run``) whose service keeps a ledger on disk: one
line ``CLIENT SEQ PID`` per executed ``record`` call, written before the reply is sent."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from support import descendants, free_port, kill_pids, pid_alive, wait_for

from appd import SecureSocketAppClient
from appd.errors import AppdError

HERE = Path(__file__).resolve().parent
KEY = "stress-suite-key-Hk3v9QmZ2xW7pL4t"

SERVICES_PY = textwrap.dedent(
    '''
    import os

    from appd import SecureSocketAppService, command


    class LedgerService(SecureSocketAppService):
        setting_names = SecureSocketAppService.setting_names | {"ledger"}
        host = "127.0.0.1"
        key = "stress-suite-key-Hk3v9QmZ2xW7pL4t"
        username = "stress"
        password = "stress-pw"
        ledger = "ledger.txt"

        def __init__(self):
            super().__init__()
            self._fd = None

        @command
        def record(self, client, seq, payload):
            if self._fd is None:
                self._fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, f"{client} {seq} {os.getpid()}\\n".encode())
            return [client, seq, payload]

        @command
        def echo(self, value):
            return value
    '''
)


@dataclass
class Supervised:
    """An ``appd run`` process serving the ledger service on ``port``."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    callers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.txt"

    def write_config(self, processes: int) -> None:
        (self.root / "services.py").write_text(SERVICES_PY)
        (self.root / "appd.toml").write_text(
            textwrap.dedent(
                f"""
                pid_file = "run/appd.pid"
                log_file = "run/appd.log"
                paths = ["."]
                shutdown_grace = 5
                log_level = "warning"

                [services.ledger]
                port = {self.port}
                processes = {processes}
                ledger = "{self.ledger}"
                restart_interval = 0.05
                restart_backoff = 1.0
                restart_max = 10000
                restart_window = 60.0
                """
            )
        )

    def run(self) -> subprocess.Popen[bytes]:
        """Start ``appd run`` and wait until a call succeeds."""
        log = (self.root / "run.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appd", "run"], cwd=self.root, stdout=log, stderr=log
        )
        log.close()
        wait_for(self._answers, timeout=30, message="appd run to serve")
        return self.proc

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"appd run exited: {(self.root / 'run.log').read_text()}")
        try:
            with self.client() as client:
                return bool(client.call("echo", "up") == "up")
        except AppdError:
            return False

    def client(self) -> SecureSocketAppClient:
        return SecureSocketAppClient(
            "127.0.0.1", self.port, "stress", "stress-pw", KEY, connect_timeout=2, timeout=5
        )

    def service_pids(self) -> list[int]:
        """The service processes (the supervisor's children)."""
        assert self.proc is not None
        return [pid for pid in descendants(self.proc.pid) if _ppid(pid) == self.proc.pid]

    def start_callers(self, count: int, calls: int, seconds: float) -> list[Path]:
        """Start ``count`` caller processes (see caller.py), each with a client id of its own;
        the files they will write their outcomes to."""
        outs = []
        for _ in range(count):
            client_id = f"c{self.started}"
            self.started += 1
            out = self.root / f"caller-{client_id}.txt"
            self.callers.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "caller.py"), str(self.port), client_id,
                     str(calls), str(seconds), str(out)],
                )
            )
            outs.append(out)
        return outs

    def wait_callers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for caller in self.callers:
            caller.wait(timeout=max(deadline - time.monotonic(), 0.1))
            assert caller.returncode == 0, f"caller exited with {caller.returncode}"

    def stop(self) -> None:
        everything = [c.pid for c in self.callers]
        if self.proc is not None:
            everything += [self.proc.pid, *descendants(self.proc.pid)]
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=15)
        kill_pids(pid for pid in everything if pid_alive(pid))
        for caller in self.callers:
            if caller.poll() is None:
                caller.kill()
            caller.wait()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def make_supervised(root: Path, processes: int) -> Supervised:
    project = Supervised(root, free_port())
    project.write_config(processes)
    return project


def _ppid(pid: int) -> int:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def ledger_counts(path: Path) -> Counter[tuple[str, int]]:
    """How many times each ``(client, seq)`` was executed."""
    counts: Counter[tuple[str, int]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            client, seq, _pid = line.split()
            counts[(client, int(seq))] += 1
    return counts


def outcomes(paths: list[Path]) -> dict[str, list[tuple[str, int]]]:
    """Every call's outcome as its caller reported it: ``ok``, ``wrong``, ``not-run``,
    ``unknown`` -> ``[(client, seq), ...]``."""
    result: dict[str, list[tuple[str, int]]] = {"ok": [], "wrong": [], "not-run": [], "unknown": []}
    for path in paths:
        client_id = path.stem.removeprefix("caller-")
        for line in path.read_text().splitlines():
            if line:
                kind, seq = line.split()[:2]
                result[kind].append((client_id, int(seq)))
    return result

