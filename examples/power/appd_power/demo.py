"""Load demo: many client processes share the power service; the PDU never sees more than 5.

::

    python -m appd_power.demo --clients 12 --requests 200

Each of ``--clients`` processes opens its own connection to the power service (as a web
worker would), then, all starting together, makes ``--requests`` requests (poweron, status,
poweroff, cycle in turn, on outlets 1..8).  The demo prints the number of requests, errors,
latency percentiles, and the PDU's peak of simultaneous sessions, read from the PDU itself.
It exits 0 when there were no errors and the peak stayed within ``--limit``, 1 otherwise.

Where the service comes from: ``--no-spawn`` uses the one at ``--host``/``--port`` (say, started
with ``appd run`` and the example's appd.toml); ``--spawn`` starts a PDU and a power service in
child processes on free ports and stops them at the end; by default the demo uses the running
service when one answers at ``--host``/``--port`` and spawns its own otherwise.  ``--also
HOST:PORT`` (repeatable) spreads the clients evenly over more running power services: other
appd instances sharing the one PDU through a ``[capacities.pdu]`` capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from appd import ConfigurationError, quit_requested
from appd.errors import ConnectFailed
from appd.runtime.process import spawn, stop_processes
from appd_power.pdu import MAX_CONNECTIONS, PduService
from appd_power.services import HOST, PORT, PowerClient, PowerService

__all__ = ["ClientResult", "Report", "drive", "main", "run_demo"]

#: What each client process asks, in turn.
COMMANDS = ("poweron", "status", "poweroff", "cycle")


@dataclass
class Report:
    """What a demo run measured."""

    clients: int
    requests: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    pdu_peak: int
    pdu_limit: int
    address: str
    spawned: bool
    #: The first few error messages, for the reader to see what went wrong.
    error_messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors, and the PDU never saw more sessions than its limit."""
        return self.errors == 0 and self.pdu_peak <= self.pdu_limit

    def text(self) -> str:
        """The report for a person."""
        source = "started by the demo" if self.spawned else "already running"
        rate = self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"power demo: {self.clients} client processes -> power service at {self.address}"
            f" ({source})",
            f"requests        {self.requests}",
            f"errors          {self.errors}",
            f"elapsed         {self.elapsed_s:.2f} s ({rate:.0f} requests/s)",
            f"latency p50     {self.p50_ms:.2f} ms",
            f"latency p90     {self.p90_ms:.2f} ms",
            f"latency p99     {self.p99_ms:.2f} ms",
            f"PDU peak        {self.pdu_peak} connections (limit {self.pdu_limit})",
        ]
        lines += [f"error: {message}" for message in self.error_messages]
        return "\n".join(lines)


def _client_process(
    host: str, port: int, index: int, requests: int, go_fd: int, result_fd: int
) -> Callable[[], None]:
    """The body of one client process: connect, wait for the start signal, make requests,
    and write ``{"latencies": [...], "errors": n, "messages": [...]}`` as JSON to
    ``result_fd``."""

    def body() -> None:
        latencies: list[float] = []
        errors = 0
        messages: list[str] = []
        client = PowerClient(host=host, port=port, timeout=60)
        try:
            client.status()  # connect and authenticate before the clock starts
        except Exception as exc:
            errors, messages = 1, [f"client {index}: {exc}"]
        else:
            os.read(go_fd, 1)  # returns at end of file: every client starts together
            for number in range(requests):
                if quit_requested():
                    break
                command = COMMANDS[number % len(COMMANDS)]
                outlet = (index + number) % 8 + 1
                started = time.perf_counter()
                try:
                    client.call(command, outlet)
                except Exception as exc:
                    errors += 1
                    if len(messages) < 3:
                        messages.append(f"client {index}: {command} {outlet}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
        finally:
            client.close()
        data = json.dumps({"latencies": latencies, "errors": errors, "messages": messages})
        with os.fdopen(result_fd, "w") as out:
            out.write(data)

    return body


def _percentile_ms(sorted_seconds: Sequence[float], fraction: float) -> float:
    if not sorted_seconds:
        return 0.0
    index = min(len(sorted_seconds) - 1, round(fraction * (len(sorted_seconds) - 1)))
    return sorted_seconds[index] * 1000


@dataclass
class ClientResult:
    """What one client process measured."""

    #: The power service it called, ``host:port``.
    address: str
    latencies: list[float]
    errors: int
    messages: list[str]


def drive(
    addresses: Sequence[tuple[str, int]], clients: int, requests: int
) -> list[ClientResult]:
    """Run the client processes, spread evenly over the power services at ``addresses``
    (client ``i`` calls ``addresses[i % len(addresses)]``); each client's result."""
    go_read, go_write = os.pipe()
    children: list[tuple[int, int, str]] = []
    try:
        for index in range(clients):
            host, port = addresses[index % len(addresses)]
            result_read, result_write = os.pipe()
            pid = spawn(
                _client_process(host, port, index, requests, go_read, result_write),
                role=f"demo-client[{index}]",
                keep_fds=(go_read, result_write),
            )
            os.close(result_write)
            children.append((pid, result_read, f"{host}:{port}"))
    finally:
        os.close(go_read)
        os.close(go_write)  # the start signal: every child's read returns
    results: list[ClientResult] = []
    for pid, result_read, address in children:
        with os.fdopen(result_read) as output:
            text = output.read()
        _pid, status = os.waitpid(pid, 0)
        if not text:
            message = f"client process {pid} died (wait status {status})"
            results.append(ClientResult(address, [], requests, [message]))
            continue
        result: dict[str, Any] = json.loads(text)
        results.append(
            ClientResult(address, result["latencies"], result["errors"], result["messages"])
        )
    return results


def _spawn_services(stderr_filename: str) -> tuple[list[int], str, int]:
    """A PDU and a power service in child processes on free ports: their pids, the service's
    host and port."""
    pdu = PduService()
    pdu.host, pdu.port = "127.0.0.1", 0
    pdu_listener = pdu.bind()
    power = PowerService()
    power.host, power.port = "127.0.0.1", 0
    power.pdu_host, power.pdu_port = pdu_listener.getsockname()[:2]
    power_listener = power.bind()
    port: int = power_listener.getsockname()[1]
    pids: list[int] = []
    try:
        for service, listener in ((pdu, pdu_listener), (power, power_listener)):
            pids.append(
                spawn(
                    service_process(service, listener),
                    role=service.name,
                    keep_fds=(listener.fileno(),),
                    stderr_filename=stderr_filename,
                )
            )
    except BaseException:
        stop_processes(pids, grace=5)
        raise
    finally:
        pdu_listener.close()
        power_listener.close()
    return pids, "127.0.0.1", port


def service_process(
    service: PduService | PowerService, listener: socket.socket
) -> Callable[[], None]:
    """The body of a process serving ``service`` on ``listener``: setup, serve until quit,
    teardown."""

    def body() -> None:
        service.setup()
        try:
            service.serve(listener)
        finally:
            service.teardown()

    return body


def run_demo(
    *,
    clients: int,
    requests: int,
    host: str = HOST,
    port: int = PORT,
    spawn_mode: str = "auto",
    limit: int = MAX_CONNECTIONS,
    service_log: str = os.devnull,
    also: Sequence[tuple[str, int]] = (),
) -> Report:
    """Run the demo and return its :class:`Report`.

    :param also: more power services (``(host, port)``, other appd instances sharing the same
        PDU through a capacity) that the clients are spread over, besides ``host:port``.

    :param spawn_mode: ``"always"`` starts a PDU and a power service for the run, ``"never"``
        uses the one at ``host:port``, ``"auto"`` uses it when it answers and spawns otherwise.
    """
    if clients < 1 or requests < 1:
        raise ConfigurationError("--clients and --requests must be at least 1")
    pids: list[int] = []
    spawned = spawn_mode == "always"
    try:
        if not spawned:
            probe = PowerClient(host=host, port=port, connect_timeout=3)
            try:
                probe.pdu_peak()
            except ConnectFailed:
                if spawn_mode == "never":
                    raise
                spawned = True
            finally:
                probe.close()
        if spawned:
            pids, host, port = _spawn_services(service_log)
        client = PowerClient(host=host, port=port, timeout=60)
        try:
            client.pdu_peak(reset=True)
            started = time.perf_counter()
            results = drive([(host, port), *also], clients, requests)
            elapsed = time.perf_counter() - started
            peak = client.pdu_peak()
        finally:
            client.close()
    finally:
        if pids:
            stop_processes(pids, grace=10)
    latencies = sorted(t for result in results for t in result.latencies)
    errors = sum(result.errors for result in results)
    messages = [message for result in results for message in result.messages]
    return Report(
        clients=clients,
        requests=clients * requests,
        errors=errors,
        elapsed_s=elapsed,
        p50_ms=_percentile_ms(latencies, 0.50),
        p90_ms=_percentile_ms(latencies, 0.90),
        p99_ms=_percentile_ms(latencies, 0.99),
        pdu_peak=peak,
        pdu_limit=limit,
        address=", ".join(f"{h}:{p}" for h, p in [(host, port), *also]),
        spawned=spawned,
        error_messages=messages[:5],
    )


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m appd_power.demo`` command; 0 when the run was clean."""
    parser = argparse.ArgumentParser(prog="python -m appd_power.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=12, help="client processes (12)")
    parser.add_argument("--requests", type=int, default=200, help="requests per client (200)")
    parser.add_argument("--host", default=HOST, help=f"power service host ({HOST})")
    parser.add_argument("--port", type=int, default=PORT, help=f"power service port ({PORT})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--spawn", dest="spawn_mode", action="store_const", const="always",
                      help="always start a PDU and a power service for the run")
    mode.add_argument("--no-spawn", dest="spawn_mode", action="store_const", const="never",
                      help="only use the running service at --host/--port")
    parser.add_argument("--limit", type=int, default=MAX_CONNECTIONS,
                        help=f"the PDU's session limit the peak is checked against "
                             f"({MAX_CONNECTIONS})")
    parser.add_argument("--service-log", default=os.devnull,
                        help="file the spawned services log to (none by default)")
    parser.add_argument("--also", action="append", default=[], metavar="HOST:PORT",
                        type=_address,
                        help="another power service sharing the PDU (another appd instance); "
                             "clients are spread evenly over all of them (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = run_demo(
            clients=args.clients, requests=args.requests, host=args.host, port=args.port,
            spawn_mode=args.spawn_mode or "auto", limit=args.limit,
            service_log=args.service_log, also=args.also,
        )
    except Exception as exc:
        print(f"power demo failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(report) | {"ok": report.ok}))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
