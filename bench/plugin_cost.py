"""What the Prometheus plugin (appd-prometheus) adds to each request.

Two measurements:

1. **In process**: the ``appd_request`` pipeline of one service called directly, with and without
   the plugin's wrapper (its counter increment and histogram observation in prometheus-client's
   multiprocess files): CPU per request, no sockets, so the figure barely moves with load.
2. **End to end**: ``appd run`` started twice on a small echo service, without and with a
   ``[prometheus]`` table; one client makes sequential calls over loopback, pinned with the
   service to one core.  Prints requests per second, p50 latency and the difference per call.

Run: ``nox -s bench`` (or ``python bench/plugin_cost.py [--quick]``); needs appd-prometheus
installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KEY = "a bench key of thirty-two bytes!"
USER, PASSWORD = "bench", "bench-password"

SERVICES_PY = textwrap.dedent(
    f"""
    from appd import SecureSocketAppService, command


    class EchoService(SecureSocketAppService):
        host = "127.0.0.1"
        port = 0
        key = {KEY!r}
        username = {USER!r}
        password = {PASSWORD!r}

        @command
        def poweron(self, outlet):
            return outlet
    """
)


# -- 1. in process -----------------------------------------------------------------------------


def in_process(n: int) -> tuple[float, float]:
    """Microseconds per request through the pipeline: without, with the plugin."""
    from appd import Request, load_hooks
    from appd_prometheus import PrometheusPlugin
    from appd_prometheus.plugin import DIRECTORY_ENV

    class Service:
        name = "echo"
        request_timeout = 60.0

        def process_request(self, request: Any) -> tuple[list[Any], dict[str, Any]]:
            return [request.args[0]], {}

    service = Service()
    request = Request(1, "poweron", [3], {}, USER, "127.0.0.1:1")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for with_plugin in (False, True):
            plugins: list[object] = []
            if with_plugin:
                os.environ[DIRECTORY_ENV] = directory
                plugin = PrometheusPlugin()
                plugin.appd_post_fork(service=service, worker=0)  # type: ignore[arg-type]
                plugins.append(plugin)
            hooks = load_hooks(plugins=plugins, entry_points=False)
            call = hooks.appd_request
            for _ in range(1000):  # warm up
                call(service=service, request=request)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(n):
                    call(service=service, request=request)
                best = min(best, (time.perf_counter() - started) / n * 1e6)
            results.append(best)
        os.environ.pop(DIRECTORY_ENV, None)
    return results[0], results[1]


# -- 2. end to end -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pids_below(root: int) -> list[int]:
    found, stack = [root], [root]
    while stack:
        parent = stack.pop()
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
                found.append(int(child))
                stack.append(int(child))
    return found


@contextlib.contextmanager
def running_appd(root: Path, port: int, metrics_port: int | None) -> Iterator[int]:
    """``appd run`` in ``root`` until the block ends; yields the supervisor's pid."""
    table = f"[prometheus]\nport = {metrics_port}\n" if metrics_port else ""
    (root / "appd.toml").write_text(
        f'paths = ["."]\npid_file = "appd.pid"\nlog_level = "warning"\n'
        f"[services.echo]\nport = {port}\n{table}"
    )
    env = {k: v for k, v in os.environ.items() if k != "APPD_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appd", "run"], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run(
                [sys.executable, "-m", "appd", "status", "--json"],
                cwd=root, env=env, capture_output=True, text=True,
            )
            with contextlib.suppress(ValueError, KeyError):
                if json.loads(status.stdout)["services"]["echo"]["state"] == "ready":
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("appd run did not get ready")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds (from the scheduler)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def end_to_end(n: int, metrics: bool) -> tuple[float, float, float]:
    """Sequential calls on one core: requests per second, p50 latency and the service
    process's CPU per call, in microseconds."""
    from appd import SecureSocketAppClient

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "services.py").write_text(SERVICES_PY)
        port = _free_port()
        with running_appd(root, port, _free_port() if metrics else None) as pid:
            for each in _pids_below(pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(each, {0})
            os.sched_setaffinity(0, {0})
            service_pid = _pids_below(pid)[-1]
            try:
                with SecureSocketAppClient("127.0.0.1", port, USER, PASSWORD, KEY) as client:
                    for i in range(500):
                        client.call("poweron", i)
                    latencies = []
                    cpu_before = _cpu_ns(service_pid)
                    started = time.perf_counter()
                    for i in range(n):
                        before = time.perf_counter_ns()
                        client.call("poweron", i)
                        latencies.append(time.perf_counter_ns() - before)
                    elapsed = time.perf_counter() - started
                    cpu = (_cpu_ns(service_pid) - cpu_before) / n / 1000
            finally:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return n / elapsed, statistics.median(latencies) / 1000, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else 10_000
    without, with_plugin = in_process(n * 5)
    print("## appd-prometheus: per-request cost\n")
    print(f"in process ({n * 5} requests, best of 5): pipeline without the plugin "
          f"{without:.2f} µs, with it {with_plugin:.2f} µs: +{with_plugin - without:.2f} µs\n")
    print(f"end to end, one core ({n} sequential calls):\n")
    print("| appd run               |    req/s |  p50 µs | service CPU µs/call |")
    print("|------------------------|----------|---------|---------------------|")
    figures = {}
    for label, metrics in (("without [prometheus]", False), ("with [prometheus]", True)):
        rate, p50, cpu = end_to_end(n, metrics)
        figures[metrics] = (p50, cpu)
        print(f"| {label:<22} | {rate:>8,.0f} | {p50:>7.1f} | {cpu:>19.1f} |")
    p50_cost = figures[True][0] - figures[False][0]
    cpu_cost = figures[True][1] - figures[False][1]
    print(f"\nper call with the plugin: p50 {p50_cost:+.1f} µs, service CPU {cpu_cost:+.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
