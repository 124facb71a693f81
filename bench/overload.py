"""Overload: how much of the scarce device's time goes to calls nobody waits for any more.

The power example's service (``appd run``, one process, a pool of 5 PDU sessions) in front of
the simulated PDU made slow (50 ms per command: 100 commands/s at most), called by 40 clients
at once, each call with a 200 ms deadline (``appd.deadline(0.2)``) and its own request id.
The device takes about 400 ms to work through 40 queued calls, so about half of them cannot
be served in time.

A ledger records, for every command the device is sent, when it was sent and the request id
of the call it serves (the bench's service module wraps the pool's PDU connection); each client
records its calls' deadlines.  *Device time past deadline* is the share of the device's commands
sent for calls whose caller had already given up: what deadlines save.

Two runs, in one go:

* ``deadline sent``: appd as it is: the client sends its time left and the service never
  starts a call after it (the late callers get ``DeadlineExceeded``, "not executed");
* ``deadline not sent``: the same clients, but their requests carry no time left (as a client
  older than deadlines): every queued call is executed, whether or not its caller still waits.

Run: ``nox -s bench`` or ``python bench/overload.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capacity
from power import Stamps, pdu_device

import appd
from appd.runtime.process import spawn

CLIENTS = 40
CLIENT_PROCESSES = 4
DEADLINE = 0.2
COMMAND_DELAY = 0.05

#: The bench's service module: the power service, with a ledger of device commands.
SERVICE_MODULE = '''
"""The power service, recording which call each PDU command serves (bench/overload.py)."""

import os
import time

import appd
from appd_power import pool
from appd_power.services import PowerService

_LEDGER = os.environ["OVERLOAD_LEDGER"]
_request = pool.PduConnection.request


def _recorded(self, line):
    fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:  # one short line per write: appends from the pool's threads never interleave
        os.write(fd, f"{appd.current_request_id()} {time.monotonic():.6f}\\n".encode())
    finally:
        os.close(fd)
    return _request(self, line)


pool.PduConnection.request = _recorded


class OverloadPowerService(PowerService):
    """``overload_power``: the example's power service, its PDU commands recorded."""
'''


def _client_process(port: int, index: int, seconds: float, send_deadline: bool,
                    go: int, out: int) -> Any:
    def body() -> None:
        from appd_power.services import PowerClient

        class OldClient(PowerClient):
            """Sends no time left, as a client older than deadlines (the id still travels)."""

            def _body(self, call_id: int, reqcmd: str, args: Any, kwargs: Any, left: float,
                      rid: str) -> bytes:
                from appd.transport.protocol import encode_request

                return encode_request(call_id, reqcmd, args, kwargs, None, rid)

        os.read(go, 1)
        calls: list[tuple[str, float, str]] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def worker(thread: int) -> None:
            kind = PowerClient if send_deadline else OldClient
            client = kind(port=port, timeout=DEADLINE, connect_timeout=10)
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                rid = f"c{index}-{thread}-{n}"
                with appd.request_id(rid), appd.deadline(DEADLINE) as at:
                    try:
                        client.poweron((thread + n) % 8 + 1)
                        outcome = "ok"
                    except appd.DeadlineExceeded:
                        outcome = "expired"
                    except appd.RequestTimeout:
                        outcome = "timeout"
                        time.sleep(0.01)  # the connection was dropped: a fresh one next
                    except appd.AppdError as exc:
                        outcome = type(exc).__name__
                with lock:
                    calls.append((rid, at, outcome))
            client.close()

        threads = [threading.Thread(target=worker, args=(t,))
                   for t in range(CLIENTS // CLIENT_PROCESSES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        os.write(out, json.dumps(calls).encode())
        os.close(out)

    return body


def _drive(port: int, seconds: float, send_deadline: bool) -> list[tuple[str, float, str]]:
    go_read, go_write = os.pipe()
    children = []
    try:
        for index in range(CLIENT_PROCESSES):
            result_read, result_write = os.pipe()
            pid = spawn(_client_process(port, index, seconds, send_deadline, go_read,
                                        result_write),
                        role=f"overload-client[{index}]", keep_fds=(go_read, result_write))
            os.close(result_write)
            children.append((pid, result_read))
    finally:
        os.close(go_read)
        os.close(go_write)
    calls: list[tuple[str, float, str]] = []
    for pid, result_read in children:
        with os.fdopen(result_read) as output:
            text = output.read()
        os.waitpid(pid, 0)
        calls.extend(tuple(c) for c in json.loads(text or "[]"))  # type: ignore[misc]
    return calls


def run(root: Path, pdu: tuple[str, int], stamps: Stamps, seconds: float,
        send_deadline: bool) -> dict[str, Any]:
    """One run: the service, the clients, and the ledger read against their deadlines."""
    root.mkdir(parents=True)
    (root / "overload_service.py").write_text(SERVICE_MODULE)
    ledger = root / "ledger"
    port = capacity.free_port()
    (root / "appd.toml").write_text("\n".join([
        'enabled = ["overload_power"]', 'log_level = "warning"',
        'modules = ["overload_service"]', "paths = [\".\"]",
        "[services.overload_power]", f"port = {port}", f'pdu_host = "{pdu[0]}"',
        f"pdu_port = {pdu[1]}", "lease_hold = 0.1",
    ]) + "\n")
    env = {**os.environ, "OVERLOAD_LEDGER": str(ledger)}
    if not capacity.EXAMPLE_INSTALLED:
        env["PYTHONPATH"] = os.pathsep.join([str(capacity.EXAMPLE), env.get("PYTHONPATH", "")])
    with open(root / "appd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appd", "--config", str(root / "appd.toml"), "run"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        capacity.wait_ready(proc, port, retry_on=appd.AppdError)
        ledger.unlink(missing_ok=True)
        stamps.reset()
        calls = _drive(port, seconds, send_deadline)
        time.sleep(1.0)  # what is still queued runs (or is dropped) before the ledger is read
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadlines = {rid: at for rid, at, _ in calls}
    sent = [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []
    late = sum(1 for rid, at in sent if rid in deadlines and float(at) > deadlines[rid])
    outcomes: dict[str, int] = {}
    for _, _, outcome in calls:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "calls": len(calls), "outcomes": outcomes, "device_commands": len(sent),
        "late_commands": late, "late_share": late / len(sent) if sent else 0.0,
        "goodput": outcomes.get("ok", 0) / seconds,
    }


def measure(quick: bool) -> dict[str, Any]:
    seconds = 3.0 if quick else 8.0
    stamps = Stamps()
    out: dict[str, Any] = {}
    with pdu_device(stamps, COMMAND_DELAY) as pdu, tempfile.TemporaryDirectory() as tmp:
        for title, send in (("deadline sent", True), ("deadline not sent", False)):
            out[title] = run(Path(tmp) / title.replace(" ", "_"), pdu, stamps, seconds, send)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = measure(args.quick)
    print(f"\n## overload: {CLIENTS} clients, {DEADLINE * 1000:.0f} ms deadlines, a PDU of 5 "
          f"sessions x {COMMAND_DELAY * 1000:.0f} ms\n")
    print("| run | calls | ok | DeadlineExceeded | RequestTimeout | device commands | "
          "device time past deadline | ok calls/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for title, row in result.items():
        o = row["outcomes"]
        print(f"| {title} | {row['calls']} | {o.get('ok', 0)} | {o.get('expired', 0)} | "
              f"{o.get('timeout', 0)} | {row['device_commands']} | {row['late_share']:.1%} | "
              f"{row['goodput']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    late = result["deadline sent"]["late_commands"]
    if late:
        print(f"\n{late} device commands were sent for calls past their deadline", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
