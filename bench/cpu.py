"""CPU per round trip, per side: where a mechanism's time goes, independent of scheduling.

Runs a mechanism's server (from ``bench/run.py``) in a process of its own, makes ``N`` sequential
calls from this process, and reports the CPU time each side spent per call: the client's from
``time.process_time``, the server's from its ``/proc/<pid>/stat`` counters.  Both sides are
pinned to one core unless ``--unpinned``.  Unlike requests per second, these figures barely
move when other work shares the machine.

Run: ``python bench/cpu.py [-n CALLS] [--only NAME ...] [--clients K]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # the sibling module with the servers and clients

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _client(make: Any, address: Any, n: int, start: Any, out: Any, cpu: int | None) -> None:
    run._pin(cpu)
    call = make(address)
    for _ in range(200):
        call()
    start.wait()
    before = time.process_time()
    for _ in range(n):
        call()
    out.put(time.process_time() - before)


def measure(name: str, n: int, clients: int, cpu: int | None) -> tuple[float, float, float]:
    """(client CPU µs per call, server CPU µs per call, wall µs per call)."""
    make = run.MECHANISMS[name][1]
    with run.running_server(name, cpu) as (address, server):
        procs, out = run.start_clients(_client, make, address, n, clients, cpu)
        server_before, wall = _cpu_of(server.pid or 0), time.perf_counter()
        client_cpu = sum(out.get(timeout=600) for _ in procs)
        wall = time.perf_counter() - wall
        server_cpu = _cpu_of(server.pid or 0) - server_before
        for proc in procs:
            proc.join()
    total = n * clients
    return client_cpu / total * 1e6, server_cpu / total * 1e6, wall / total * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30000, help="calls per client")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--unpinned", action="store_true")
    parser.add_argument("--only", nargs="*", choices=list(run.MECHANISMS))
    args = parser.parse_args(argv)
    cpu = None if args.unpinned else 0
    print(f"| {'mechanism':<28} | client µs | server µs | wall µs |")
    for name in args.only or ["raw TCP", "appd"]:
        c, s, w = measure(name, args.n, args.clients, cpu)
        print(f"| {name:<28} | {c:>9.1f} | {s:>9.1f} | {w:>7.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
