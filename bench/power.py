"""How busy appd keeps the scarce resource: the simulated PDU's command rate through appd's
power service, beside the rate the same device reaches driven directly.

The device (``appd_power.pdu``: 5 sessions, 5 ms per command) runs in a process of its own and
stamps every outlet command it answers (``ON``, ``OFF``, ``STATUS``) into shared memory.  The
rate is read from those stamps, over the middle 80 % of the run (the first and last 10 % of
the commands are left out: client start-up and the tail where fewer sessions are busy count
for neither side), so it is the device's own steady-state command rate whoever drives it.

1. standalone: 5 threads, each on a raw session of its own, send the demo's command mix as
   fast as the device answers: the most the device does (its limit is 1,000 commands/s);
2. through appd: ``appd run`` with the power service, the demo's client processes calling it
   (``poweron`` / ``status`` / ``poweroff`` / ``cycle``: ``cycle`` is two device commands);
   with 5 and with 12 clients and the pool alone, and with two ``appd run`` instances sharing
   the device through a ``[capacities.pdu]`` capacity.

Utilization is each setup's device rate over the standalone rate.

Run: ``nox -s bench`` or ``python bench/power.py [--quick] [--json FILE]`` (the power example
installed, or taken from the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capacity
from appd_power.pdu import PduDevice, PduState
from appd_power.pool import PduConnection

from appd.runtime.process import spawn, stop_processes

#: Device commands each demo client sends per four requests (``cycle`` is OFF then ON).
DEMO_LINES = ("ON {o}", "STATUS {o}", "OFF {o}", "OFF {o}", "ON {o}")
#: Most command stamps kept (a run of the full benchmark stays far below).
MAX_STAMPS = 1 << 20
#: Share of the stamps left out at each end of a run.
TRIM = 0.10
COMMAND_DELAY = 0.005


class Stamps:
    """Shared memory (inherited through fork) holding a count and one ``float`` per command."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8 * (MAX_STAMPS + 1))
        self._count = ctypes.c_int64.from_buffer(self._map)
        self._times = (ctypes.c_double * MAX_STAMPS).from_buffer(self._map, 8)

    def reset(self) -> None:
        self._count.value = 0

    def add(self, when: float) -> None:
        """Record one command (the caller serializes)."""
        n = self._count.value
        if n < MAX_STAMPS:
            self._times[n] = when
            self._count.value = n + 1

    def rate(self) -> tuple[float, int]:
        """(commands per second over the middle of the run, commands in all)."""
        n = self._count.value
        times = sorted(self._times[:n])
        if n < 20:
            return 0.0, n
        first, last = int(n * TRIM), int(n * (1 - TRIM))
        span = times[last] - times[first]
        return (last - first) / span if span > 0 else 0.0, n


class StampedState(PduState):
    """The device's state, stamping each answered outlet command."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps

    def answer(self, line: str) -> tuple[str | None, bool]:
        reply, close = super().answer(line)
        words = line.split()
        if reply is not None and reply.startswith("OK") and words and \
                words[0].upper() in ("ON", "OFF", "STATUS"):
            with self._lock:
                self.stamps.add(time.monotonic())
        return reply, close


@contextlib.contextmanager
def pdu_device(
    stamps: Stamps, command_delay: float = COMMAND_DELAY
) -> Iterator[tuple[str, int]]:
    """The simulated PDU in a child process, stamping its commands into ``stamps``."""
    import socket

    from appd.runtime.quit import quit_requested

    listener = socket.create_server(("127.0.0.1", 0), backlog=64)

    def body() -> None:
        PduDevice(StampedState(stamps), command_delay=command_delay).serve(
            listener, quit_requested
        )

    pid = spawn(body, role="pdu", keep_fds=(listener.fileno(),))
    try:
        yield listener.getsockname()[:2]
    finally:
        stop_processes([pid], grace=10)
        listener.close()


def standalone(pdu: tuple[str, int], stamps: Stamps, commands: int) -> float:
    """The device's rate driven by 5 raw sessions, ``commands`` commands each."""
    conns = [PduConnection.open(*pdu) for _ in range(5)]
    stamps.reset()
    start = threading.Barrier(5)

    def drive(index: int, conn: PduConnection) -> None:
        start.wait()
        for number in range(commands):
            conn.request(DEMO_LINES[number % len(DEMO_LINES)].format(o=(index + number) % 8 + 1))

    threads = [threading.Thread(target=drive, args=(i, c)) for i, c in enumerate(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in conns:
        conn.close()
    return stamps.rate()[0]


def through_appd(
    pdu: tuple[str, int], stamps: Stamps, tmp: Path, *, instances: int,
    capacity_backend: str | None, clients: int, requests: int,
) -> tuple[float, dict[str, Any]]:
    """The device's rate with ``clients`` demo clients calling ``instances`` appd instances."""
    from appd_power.demo import drive

    slots = tmp / "slots"  # one slot directory: the instances share the local capacity
    supervisors = [capacity.Supervisor(tmp / f"host{i}", pdu, capacity_backend, slots)
                   for i in range(instances)]
    try:
        for supervisor in supervisors:
            supervisor.wait_ready()
        stamps.reset()
        results = drive([("127.0.0.1", s.port) for s in supervisors], clients, requests)
        rate, _ = stamps.rate()
        errors = sum(r.errors for r in results)
        latencies = sorted(t for r in results for t in r.latencies)
        p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
        return rate, {"errors": errors, "p50_ms": p50,
                      "rss_mb": [s.service_rss_mb() for s in supervisors]}
    finally:
        for supervisor in supervisors:
            supervisor.stop()


SETUPS: Sequence[tuple[str, int, int, str | None]] = (
    ("1 instance, 5 clients", 1, 5, None),
    ("1 instance, 12 clients", 1, 12, None),
    ("2 instances, [capacities.pdu] local, 12 clients", 2, 12, "local"),
)


def measure(quick: bool) -> dict[str, Any]:
    """Standalone and through-appd device rates (standalone measured before and after)."""
    per_session, requests = (200, 80) if quick else (600, 250)
    stamps = Stamps()
    out: dict[str, Any] = {}
    with pdu_device(stamps) as pdu, tempfile.TemporaryDirectory() as tmp:
        alone = [standalone(pdu, stamps, per_session)]
        for title, instances, clients, backend in SETUPS:
            total = requests * 12 // clients  # the same device work whatever the client count
            rate, extra = through_appd(
                pdu, stamps, Path(tmp) / title.replace(" ", "_").replace(",", ""),
                instances=instances, capacity_backend=backend, clients=clients, requests=total,
            )
            out[title] = {"rate": rate, **extra}
        alone.append(standalone(pdu, stamps, per_session))
    base = max(alone)
    out["standalone"] = {"rate": base, "runs": alone}
    for title, *_ in SETUPS:
        out[title]["utilization"] = out[title]["rate"] / base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer commands (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = measure(args.quick)
    print(f"\n## the PDU through appd (5 sessions, {COMMAND_DELAY * 1000:.0f} ms per command)\n")
    print(f"| {'setup':<48} | {'commands/s':>10} | {'utilization':>11} | {'p50 ms':>6} | "
          "errors |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 13}|{'-' * 8}|--------|")
    alone = result["standalone"]
    print(f"| {'standalone: 5 raw sessions':<48} | {alone['rate']:>10,.0f} | {'100 %':>11} | "
          f"{'':>6} | {'':>6} |")
    for title, *_ in SETUPS:
        row = result[title]
        print(f"| {title:<48} | {row['rate']:>10,.0f} | {row['utilization']:>10.1%} | "
              f"{row['p50_ms']:>6.1f} | {row['errors']:>6} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
