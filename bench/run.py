"""appd side by side with raw sockets and peer RPC libraries, on loopback.

Each mechanism's server runs in a process of its own; the client makes small echo calls
(``poweron``-sized: a command name and an integer) sequentially from one process, then from 8
client processes at once.  Sequential runs happen twice: unpinned, and with server and client
pinned to one core (placement on a 2-core machine moves latency a lot).  Prints requests per
second, p50 and p99 latency, and each mechanism's ratio to raw TCP (the floor).

Run: ``nox -s bench`` (or ``python bench/run.py [--quick] [--only NAME ...]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client as MpClient
from multiprocessing.connection import Listener as MpListener
from typing import Any

KEY = "bench-key-0123456789abcdef"
USER, PASSWORD = "bench", "bench-password"
HEADER = struct.Struct(">I")
PAYLOAD = b"\x92\xa7poweron\x03" + b"\x00" * 54  # a 64-byte message, like a small request

Call = Callable[[], Any]


# -- servers (each runs in its own process and reports its address on a queue) ----------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _raw_conn(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            (n,) = HEADER.unpack(_recv_exact(sock, 4))
            body = _recv_exact(sock, n)
            sock.sendall(HEADER.pack(len(body)) + body)
    except (EOFError, OSError):
        sock.close()


def serve_raw(ready: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_raw_conn, args=(sock,), daemon=True).start()


def serve_asyncio(ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (n,) = HEADER.unpack(await reader.readexactly(4))
                body = await reader.readexactly(n)
                writer.write(HEADER.pack(len(body)) + body)
        except (asyncio.IncompleteReadError, OSError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ready.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def serve_mpconn(ready: Any) -> None:
    # multiprocessing.connection listens with a backlog of 1 unless told: 8 clients connecting
    # at once then lose connections the kernel completed but never queued (a client waits
    # for its challenge for ever).
    listener = MpListener(("127.0.0.1", 0), authkey=KEY.encode(), backlog=64)
    ready.put(listener.address[1])

    def conn_loop(conn: Any) -> None:
        try:
            while True:
                conn.send_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            conn.close()

    while True:
        try:
            conn = listener.accept()
        except Exception:  # a failed authentication must not stop the benchmark server
            continue
        threading.Thread(target=conn_loop, args=(conn,), daemon=True).start()


def serve_pyro5(ready: Any) -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Echo:
        def echo(self, cmd: str, value: Any) -> Any:
            return value

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    uri = daemon.register(Echo, "echo")
    ready.put(str(uri))
    daemon.requestLoop()


def serve_rpyc(ready: Any) -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class EchoService(rpyc.Service):  # type: ignore[misc]
        def exposed_echo(self, cmd: str, value: Any) -> Any:
            return value

    server = ThreadedServer(EchoService, hostname="127.0.0.1", port=0)
    ready.put(server.port)
    server.start()


def serve_appd(ready: Any) -> None:
    from appd import SecureSocketAppService, command, configure_logging
    from appd.runtime.quit import request_quit

    configure_logging("bench", level="WARNING")  # keep the tables free of service log lines

    class BenchService(SecureSocketAppService):
        host, port, key, username, password = "127.0.0.1", 0, KEY, USER, PASSWORD

        @command
        def poweron(self, outlet: int) -> int:
            return outlet

    signal.signal(signal.SIGTERM, lambda *_: request_quit())
    service = BenchService()
    listener = service.bind()
    ready.put(listener.getsockname()[1])
    service.serve(listener)


# -- clients -----------------------------------------------------------------------------------


def client_raw(address: Any) -> Call:
    sock = socket.create_connection(("127.0.0.1", address))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = HEADER.pack(len(PAYLOAD)) + PAYLOAD

    def call() -> Any:
        sock.sendall(frame)
        (n,) = HEADER.unpack(_recv_exact(sock, 4))
        return _recv_exact(sock, n)

    return call


def client_mpconn(address: Any) -> Call:
    conn = MpClient(("127.0.0.1", address), authkey=KEY.encode())

    def call() -> Any:
        conn.send_bytes(PAYLOAD)
        return conn.recv_bytes()

    return call


def client_pyro5(address: Any) -> Call:
    import Pyro5.api

    proxy = Pyro5.api.Proxy(address)
    return lambda: proxy.echo("poweron", 3)


def client_rpyc(address: Any) -> Call:
    import rpyc

    conn = rpyc.connect("127.0.0.1", address)
    return lambda: conn.root.echo("poweron", 3)


def client_appd(address: Any) -> Call:
    from appd import SecureSocketAppClient

    client = SecureSocketAppClient("127.0.0.1", address, USER, PASSWORD, KEY)
    return lambda: client.call("poweron", 3)


MECHANISMS: dict[str, tuple[Callable[[Any], None], Callable[[Any], Call]]] = {
    "raw TCP": (serve_raw, client_raw),
    "asyncio TCP": (serve_asyncio, client_raw),
    "multiprocessing.connection": (serve_mpconn, client_mpconn),
    "Pyro5": (serve_pyro5, client_pyro5),
    "rpyc": (serve_rpyc, client_rpyc),
    "appd": (serve_appd, client_appd),
}


# -- measurement -------------------------------------------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _server_main(serve: Callable[[Any], None], ready: Any, cpu: int | None) -> None:
    _pin(cpu)
    serve(ready)


def _timed_calls(call: Call, n: int, start: Any = None) -> list[int]:
    for _ in range(min(200, n)):
        call()
    if start is not None:
        start.wait()  # every client warmed up: now the clock starts
    latencies = []
    clock = time.perf_counter_ns
    for _ in range(n):
        before = clock()
        call()
        latencies.append(clock() - before)
    return latencies


def _client_main(
    make: Callable[[Any], Call], address: Any, n: int, start: Any, out: Any, cpu: int | None
) -> None:
    _pin(cpu)
    out.put(_timed_calls(make(address), n, start))


@contextlib.contextmanager
def running_server(name: str, cpu: int | None) -> Iterator[tuple[Any, mp.process.BaseProcess]]:
    """Start ``name``'s server in a process of its own (pinned to ``cpu`` if given); yield its
    address and process; terminate it on exit."""
    ctx = mp.get_context("fork")
    ready = ctx.Queue()
    server = ctx.Process(
        target=_server_main, args=(MECHANISMS[name][0], ready, cpu), daemon=True
    )
    server.start()
    try:
        yield ready.get(timeout=30), server
    finally:
        server.terminate()
        server.join(5)
        if server.is_alive():
            server.kill()
            server.join()


def start_clients(
    target: Callable[..., None], make: Callable[[Any], Call], address: Any, n: int, clients: int,
    cpu: int | None,
) -> tuple[list[mp.process.BaseProcess], Any]:
    """Start ``clients`` processes running ``target(make, address, n, start, out, cpu)``; return
    once every one has warmed up (they pass the ``start`` barrier together, with the caller),
    with the processes and the queue they report on."""
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(make, address, n, start, out, cpu))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    start.wait()
    return procs, out


def measure(name: str, n: int, clients: int, cpu: int | None) -> tuple[float, float, float]:
    """(requests per second, p50 µs, p99 µs) for one mechanism and one configuration."""
    make = MECHANISMS[name][1]
    with running_server(name, cpu) as (address, _):
        if clients == 1:
            _pin(cpu)
            latencies = _timed_calls(make(address), n)
            elapsed = sum(latencies) / 1e9
            total = n
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        else:
            procs, out = start_clients(_client_main, make, address, n, clients, cpu)
            started = time.perf_counter()
            latencies = []
            for _ in procs:
                latencies.extend(out.get(timeout=300))
            elapsed = time.perf_counter() - started
            total = n * clients
            for proc in procs:
                proc.join()
    latencies.sort()
    p50 = statistics.median(latencies) / 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] / 1000
    return total / elapsed, p50, p99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke test)")
    parser.add_argument("--only", nargs="*", choices=list(MECHANISMS), help="mechanisms to run")
    args = parser.parse_args(argv)
    names = args.only or list(MECHANISMS)
    if "raw TCP" not in names:
        names.insert(0, "raw TCP")
    seq_n, conc_n = (500, 200) if args.quick else (5000, 1500)
    configs = [
        ("sequential, unpinned", 1, None, seq_n),
        ("sequential, one core", 1, 0, seq_n),
        ("8 client processes", 8, None, conc_n),
    ]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, loopback TCP")
    for title, clients, cpu, n in configs:
        print(f"\n## {title} ({n} calls{' per client' if clients > 1 else ''})\n")
        print(f"| {'mechanism':<28} | {'req/s':>8} | {'p50 µs':>7} | {'p99 µs':>7} | vs raw |")
        print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|--------|")
        floor = 0.0
        for name in names:
            rate, p50, p99 = measure(name, n, clients, cpu)
            floor = floor or rate
            print(
                f"| {name:<28} | {rate:>8,.0f} | {p50:>7.1f} | {p99:>7.1f} | "
                f"{floor / rate:>5.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
