"""A service that serves its own protocol (``AppServiceBase`` with ``bind()`` and
``serve(listener)``) beats its heartbeat for as long as it runs; a frozen process does not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import LINE_SERVICE_PY, descendants, free_port, kill_pids, wait_for


def _ages(status_path: Path) -> list[float]:
    import json

    try:
        status = json.loads(status_path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    service = status.get("services", {}).get("line", {})
    return [p["heartbeat_age"] for p in service.get("processes", [])
            if p.get("heartbeat_age") is not None and p.get("state") == "ready"]


def test_an_own_serving_loop_keeps_a_fresh_heartbeat_and_a_frozen_one_does_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "services.py").write_text(LINE_SERVICE_PY)
    port = free_port()
    (tmp_path / "appd.toml").write_text(
        f'paths = ["."]\npid_file = "run/appd.pid"\nlog_format = "json"\n'
        f"[services.line]\nport = {port}\n"
    )
    status = tmp_path / "run" / "appd.status.json"
    env = {k: v for k, v in os.environ.items() if k != "APPD_CONFIG"}
    before = set(descendants())
    proc = subprocess.Popen([sys.executable, "-m", "appd", "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: bool(_ages(status)), timeout=30, message="the line service ready")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.makefile().readline() == "hello\n"
        end = time.monotonic() + 6
        while time.monotonic() < end:
            ages = _ages(status)
            assert ages and max(ages) < 2.0, ages
            time.sleep(0.5)
        import json

        [pid] = [p["pid"] for p in json.loads(status.read_text())["services"]["line"]["processes"]]
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: (_ages(status) or [0.0])[0] > 3.0, timeout=10,
                     message="the frozen process's heartbeat to grow old")
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            kill_pids(set(descendants()) - before)
