"""The seed's PowerService / PowerClient, with only its import line changed, served for real."""

from __future__ import annotations

import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "power_service.py"

SERVE = f"""
import runpy, signal
from appd.runtime.quit import request_quit
signal.signal(signal.SIGTERM, lambda *_: request_quit())
example = runpy.run_path({str(EXAMPLE)!r})
example["PowerService"]().run()
"""


@pytest.fixture
def power_service() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", SERVE])
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_seed_example_serves_poweron_to_a_client_in_another_process(
    power_service: subprocess.Popen[bytes],
) -> None:
    example = runpy.run_path(str(EXAMPLE))  # builds `powerclient` at import time, lazily
    client = example["powerclient"]

    def answered() -> object:
        try:
            return client.send_request("poweron", 3)
        except Exception:
            assert power_service.poll() is None, "service exited"
            return None

    assert wait_for(answered, message="poweron to be served") == ([], {})
    assert client.send_request("poweron", 4) == ([], {})
    client.close()
    power_service.send_signal(signal.SIGTERM)
    assert power_service.wait(timeout=20) == 0  # graceful stop on quit
