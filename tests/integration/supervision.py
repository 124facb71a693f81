"""Helpers for the supervision tests: a project directory, ``appd run`` in the foreground, its
log lines, the status document and clients calling in a loop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import descendants, free_port, kill_pids, wait_for

from appd import SecureSocketAppClient

TESTS_DIR = Path(__file__).resolve().parent.parent
KEY = "a supervision key of 32 bytes!!!"

SERVICES_PY = textwrap.dedent(
    """
    import logging
    import os
    import time

    from appd import AppServiceBase, SecureSocketAppService, command

    if os.environ.get("RECORD_KEY_DERIVATIONS"):  # which processes derive handshake keys
        import appd.transport.protocol as protocol

        derive = protocol.password_key

        def recording_password_key(*args):
            with open(os.environ["RECORD_KEY_DERIVATIONS"], "a") as record:
                record.write(f"{os.getpid()}\\n")
            return derive(*args)

        protocol.password_key = recording_password_key


    class Base(SecureSocketAppService):
        abstract = True
        host = "127.0.0.1"
        port = 0
        key = "a supervision key of 32 bytes!!!"
        username = "user"
        password = "user password"
        setting_names = SecureSocketAppService.setting_names | {"greeting"}
        greeting = "hello"

        @command
        def pid(self):
            return os.getpid()

        @command
        def slow(self, seconds):
            time.sleep(seconds)
            return "done"

        @command
        def greet(self):
            return self.greeting

        @command
        def say(self, text):
            logging.getLogger("shop").warning("handler says %s", text)
            print("printed by the handler", flush=True)
            return text

        @command
        def fail(self, text):
            raise ValueError(text)



    class AlphaService(Base):
        pass


    class BetaService(Base):
        pass


    class GammaService(Base):
        pass


    class BrokenService(Base):
        def setup(self):
            raise RuntimeError("this service never starts")
    """
)


@dataclass
class Project:
    """A directory with services.py and appd.toml, run with ``appd run``."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "appd.pid"

    @property
    def log(self) -> Path:
        return self.root / "stderr.log"

    def port(self, name: str) -> int:
        return self.ports.setdefault(name, free_port())

    def write_config(
        self, services: dict[str, dict[str, Any]], extra: str = "", plugins: tuple[str, ...] = ()
    ) -> None:
        lines = [
            'pid_file = "run/appd.pid"',
            'log_file = "run/appd.log"',
            'paths = ["."]',
            'log_format = "json"',
            f"enabled = {json.dumps(list(services))}",
            "shutdown_grace = 10",
            f"plugins = {json.dumps(['recording_plugin:recorder', *plugins])}",
            extra,
        ]
        for name, settings in services.items():
            lines.append(f"[services.{name}]")
            settings = {"port": self.port(name), **settings}
            lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        (self.root / "appd.toml").write_text("\n".join(lines) + "\n")
        (self.root / "appd.toml").chmod(0o600)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
        env["APPD_RECORD_HOOKS"] = str(self.root / "hooks.jsonl")
        env.pop("APPD_CONFIG", None)
        return env

    def appd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appd", *args], cwd=self.root, env=self.env(),
            capture_output=True, text=True, timeout=timeout,
        )

    def run_in(self, run_dir: str) -> subprocess.Popen[bytes]:
        """:meth:`run` with the configuration's ``run_dir`` set to ``run_dir``."""
        return self.run(under=run_dir)

    def run(self, under: str = "") -> subprocess.Popen[bytes]:
        """``appd run`` in the foreground, its standard error to :attr:`log`; waits until
        every service is ready (``under``: the ``run_dir`` the pid file is relative to)."""
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appd", "run"], cwd=self.root, env=self.env(),
                stdout=subprocess.DEVNULL, stderr=err,
            )
        wait_for(lambda: self.all_ready(under) or self.proc.poll() is not None,  # type: ignore[union-attr]
                 timeout=30, message="every service to be ready")
        assert self.proc.poll() is None, self.log.read_text()
        return self.proc

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def status(self, under: str = "") -> dict[str, Any]:
        path = self.root / under / "run" / "appd.status.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def all_ready(self, under: str = "") -> bool:
        services = self.status(under).get("services", {})
        return bool(services) and all(s["state"] == "ready" for s in services.values())

    def pids(self, name: str, under: str = "") -> list[int]:
        service = self.status(under).get("services", {}).get(name, {})
        return [p["pid"] for p in service.get("processes", []) if p["pid"]]

    def hup(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)

    def records(self, path: Path | None = None) -> list[dict[str, Any]]:
        """The JSON log records in the log (other lines skipped)."""
        found = []
        for line in (path or self.log).read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def hook_calls(self, name: str) -> list[dict[str, Any]]:
        """Hook calls the recording plugin wrote, in any process."""
        path = self.root / "hooks.jsonl"
        if not path.exists():
            return []
        calls = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                call = json.loads(line)
                if call["hook"] == name:
                    calls.append(call)
        return calls

    def in_flight(self, cmd: str) -> bool:
        """True once a request for ``cmd`` has reached a handler."""
        calls = self.hook_calls("appd_request")
        return any(f"cmd='{cmd}'" in call["kwargs"]["request"] for call in calls)

    def client(self, name: str, **kwargs: Any) -> SecureSocketAppClient:
        return SecureSocketAppClient(
            "127.0.0.1", self.port(name), "user", "user password", KEY, **kwargs
        )


@contextlib.contextmanager
def project_in(tmp_path: Path) -> Iterator[Project]:
    """A project in ``tmp_path``; every process it started is gone afterwards."""
    before = set(descendants())
    (tmp_path / "services.py").write_text(SERVICES_PY)
    project = Project(tmp_path)
    try:
        yield project
    finally:
        project.stop()
        kill_pids(set(descendants()) - before)


class Callers:
    """``count`` threads, each with its own client, calling ``echo``-like ``pid`` in a loop;
    records failures and, per thread, the longest gap between successful replies."""

    def __init__(
        self, project: Project, service: str, count: int, *, pause: float = 0.005
    ) -> None:
        self.project = project
        self.pause = pause
        self.service = service
        self.failures: list[BaseException] = []
        self.replies = 0
        self.gaps = [0.0] * count
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(count)
        ]

    def _loop(self, index: int) -> None:
        with self.project.client(self.service, timeout=20) as client:
            last: float | None = None  # gaps are between replies: none before the first
            while not self._stop.is_set():
                try:
                    pid = client.call("pid")
                except BaseException as exc:  # every failure counts
                    self.failures.append(exc)
                    continue
                now = time.monotonic()
                if last is not None:
                    self.gaps[index] = max(self.gaps[index], now - last)
                last = now
                self.replies += 1
                self.pids.add(pid)
                self._stop.wait(self.pause)

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
