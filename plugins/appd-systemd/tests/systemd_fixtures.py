"""A datagram socket standing in for systemd's notification socket, and ``appd run`` projects."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import wait_for

KEY = "a systemd test key of 32 bytes!!"
USER, PASSWORD = "web", "systemd test password"


@dataclass
class Message:
    """One notification datagram, parsed, with when it arrived."""

    at: float
    fields: dict[str, str]
    raw: bytes


class NotifySocket:
    """A bound ``AF_UNIX``/``SOCK_DGRAM`` socket; a thread records every datagram as it arrives
    (with its arrival time), so tests can reason about when notifications came."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        sock.settimeout(0.05)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                raw = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            fields = dict(
                line.split("=", 1) for line in raw.decode().splitlines() if "=" in line
            )
            with self._lock:
                self.messages.append(Message(time.monotonic(), fields, raw))

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()

    def drain(self, timeout: float = 0.1) -> list[Message]:
        """What has arrived so far (after waiting ``timeout`` for stragglers)."""
        time.sleep(timeout)
        with self._lock:
            return list(self.messages)

    def with_key(self, key: str, value: str | None = None) -> list[Message]:
        with self._lock:
            messages = list(self.messages)
        return [
            m for m in messages if key in m.fields and (value is None or m.fields[key] == value)
        ]

    def wait_for(self, key: str, value: str | None = None, *, timeout: float = 20.0) -> Message:
        found = wait_for(
            lambda: self.with_key(key, value), timeout=timeout, message=f"{key}={value} notified"
        )
        return found[0]


SERVICES_PY = textwrap.dedent(
    """
    import json
    import os
    import subprocess
    import sys
    import time

    from appd import SecureSocketAppService, command


    class EchoService(SecureSocketAppService):
        host = "127.0.0.1"
        port = 0
        key = "a systemd test key of 32 bytes!!"
        username = "web"
        password = "systemd test password"
        ready_delay = 0.0

        def setup(self):
            time.sleep(float(os.environ.get("SLOW_SETUP", "0")))

        @command
        def echo(self, value):
            return value

        @command
        def environment(self):
            names = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                     "LISTEN_PID", "LISTEN_FDNAMES")
            return {name: os.environ.get(name) for name in names}

        @command
        def pid(self):
            return os.getpid()

        @command
        def child_environment(self):
            out = subprocess.run(
                [sys.executable, "-c", "import json, os; print(json.dumps(sorted(os.environ)))"],
                capture_output=True, text=True, check=True,
            ).stdout
            return json.loads(out)


    class SlowService(EchoService):
        def setup(self):
            time.sleep(float(os.environ.get("SLOW_SETUP", "0")) + 1.0)
    """
)


@dataclass
class Project:
    """A directory holding services.py and appd.toml, where ``appd`` runs as a user runs it."""

    root: Path
    ports: dict[str, int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write_config(self, extra: str = "", *, processes: int = 1) -> None:
        services = "".join(
            f"\n[services.{name}]\nport = {port}\nprocesses = {processes}\n"
            for name, port in self.ports.items()
        )
        (self.root / "appd.toml").write_text(
            textwrap.dedent(
                f"""
                pid_file = "run/appd.pid"
                log_file = "run/appd.log"
                paths = ["."]
                enabled = {sorted(self.ports)!r}
                shutdown_grace = 3
                """
            ).replace("'", '"')
            + services
            + textwrap.dedent(extra)
        )

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        systemds = ("NOTIFY_", "WATCHDOG_", "LISTEN_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(systemds)}
        env.pop("APPD_CONFIG", None)
        env.update(extra or {})
        return env

    def appd(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appd", *args],
            cwd=self.root, env=self.env(env), capture_output=True, text=True, timeout=60,
        )

    def run(
        self, env: Mapping[str, str] | None = None, *, argv: Sequence[str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[bytes]:
        with (self.root / "run.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv or [sys.executable, "-m", "appd", "run"]),
                cwd=self.root, env=self.env(env), stdout=log, stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds),
            )
        self.procs.append(proc)
        return proc

    def status(self) -> dict[str, Any]:
        import json

        result = self.appd("status", "--json")
        try:
            data: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return {}
        return data

    def log(self) -> str:
        path = self.root / "run.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, name: str = "echo", port: int | None = None) -> Any:
        from appd import SecureSocketAppClient

        return SecureSocketAppClient(
            "127.0.0.1", port or self.ports[name], USER, PASSWORD, KEY, timeout=10
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode
