"""As systemd runs appd: output on the journal's Unix stream socket, and a service serving its
own protocol beside a socket service, under the aggregate watchdog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from support import LINE_SERVICE_PY, free_port, wait_for
from systemd_fixtures import NotifySocket, Project


@pytest.mark.timeout(120)
def test_journal_stream_output_own_serving_loop_ready_and_watchdog(
    project: Project, notify_socket: NotifySocket
) -> None:
    services = project.root / "services.py"
    services.write_text(services.read_text() + LINE_SERVICE_PY)
    project.ports["line"] = free_port()
    project.write_config()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received = bytearray()

    def drain() -> None:
        while chunk := ours.recv(65536):
            received.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appd", "run"], cwd=project.root,
        env=project.env({"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "2000000"}),
        stdout=theirs.fileno(), stderr=theirs.fileno(),
    )
    project.procs.append(proc)
    theirs.close()
    try:
        notify_socket.wait_for("READY", "1", timeout=30)
        status = project.status()
        assert all(s["restarts"] == 0 for s in status["services"].values()), status
        with socket.create_connection(("127.0.0.1", project.ports["line"]), timeout=5) as c:
            assert c.makefile().readline() == "hello\n"
        # Pings go on for a unit whose processes are healthy, whatever they serve.
        since = time.monotonic()
        time.sleep(6)
        pings = [m for m in notify_socket.with_key("WATCHDOG", "1") if m.at > since]
        assert len(pings) >= 4, pings
        [line_pid] = [p["pid"] for p in project.status()["services"]["line"]["processes"]]
        os.kill(line_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            time.sleep(4.5)
            late = [m for m in notify_socket.with_key("WATCHDOG") if m.at > stopped + 2.5]
            assert late == [], "pings went on while the process was frozen"
        finally:
            os.kill(line_pid, signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: [m for m in notify_socket.with_key("WATCHDOG") if m.at > resumed],
                 timeout=5, message="pings after SIGCONT")
    finally:
        assert project.stop(proc) == 0
    assert b'"event"' in bytes(received) or b"event" in bytes(received)
