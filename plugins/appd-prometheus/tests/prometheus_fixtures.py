"""``appd run`` projects with the metrics endpoint on, and a scraper that parses what it serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

KEY = "a metrics test key of 32 bytes!!"
USER, PASSWORD = "web", "metrics test password"


SERVICES_PY = textwrap.dedent(
    """
    import os
    import time

    from appd import SecureSocketAppService, command


    class EchoService(SecureSocketAppService):
        host = "127.0.0.1"
        port = 0
        key = "a metrics test key of 32 bytes!!"
        username = "web"
        password = "metrics test password"
        concurrency = 1
        max_queue = 0
        request_timeout = 2.0

        @command
        def echo(self, value):
            return value

        @command
        def fail(self):
            raise ValueError("this command always fails")

        @command
        def slow(self, seconds):
            time.sleep(seconds)
            return os.getpid()

        @command
        def pid(self):
            return os.getpid()

        @command
        def hold(self, seconds):
            with self.capacity("pdu").acquire(timeout=5):
                time.sleep(seconds)
            return "released"
    """
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: ``(name, labels) -> value``."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class Project:
    """A directory holding services.py and appd.toml, where ``appd`` runs as a user runs it."""

    root: Path
    port: int
    metrics_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def write_config(
        self, *, processes: int = 2, prometheus: bool = True, capacity: bool = False
    ) -> None:
        table = (
            f'[prometheus]\nport = {self.metrics_port}\ndirectory = "metrics"\n'
            if prometheus else ""
        )
        if capacity:
            table += "[capacities.pdu]\nlimit = 2\n"
        (self.root / "appd.toml").write_text(
            textwrap.dedent(
                f"""
                pid_file = "run/appd.pid"
                log_file = "run/appd.log"
                paths = ["."]
                shutdown_grace = 3

                [services.echo]
                port = {self.port}
                processes = {processes}
                restart_interval = 0.2
                """
            )
            + table
        )

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("APPD_CONFIG", "PROMETHEUS_MULTIPROC_DIR", "APPD_PROMETHEUS_DIR"):
            env.pop(name, None)
        env.update(extra or {})
        return env

    def appd(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appd", *args],
            cwd=self.root, env=self.env(env), capture_output=True, text=True, timeout=60,
        )

    def run(self, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / "run.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "appd", "run"],
                cwd=self.root, env=self.env(env), stdout=log, stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def status(self) -> dict[str, Any]:
        result = self.appd("status", "--json")
        try:
            data: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return {}
        return data

    def ready_pids(self) -> list[int] | None:
        """The pids of the echo service's processes once every one is ready."""
        processes = self.status().get("services", {}).get("echo", {}).get("processes", [])
        if processes and all(p["state"] == "ready" and p["pid"] for p in processes):
            return [p["pid"] for p in processes]
        return None

    def scrape(self) -> Samples:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse(response.read().decode())

    def client(self, **kwargs: Any) -> Any:
        from appd import SecureSocketAppClient

        return SecureSocketAppClient("127.0.0.1", self.port, USER, PASSWORD, KEY, **kwargs)

    def log(self) -> str:
        path = self.root / "run.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode
