"""The seed's PowerService / PowerClient, with only its import line changed, served for real."""

from __future__ import annotations

import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "power_service.py"

# The example hard-codes port 9001, which other software on a shared machine may hold, so the
# test moves the service with apply_settings (what configuration does) and builds the example's
# own PowerClient for that port; the example file itself is untouched.
SERVE = """
import runpy, signal, sys
from appd.runtime.quit import request_quit
signal.signal(signal.SIGTERM, lambda *_: request_quit())
example = runpy.run_path(sys.argv[1])
service = example["PowerService"]()
service.apply_settings({"port": int(sys.argv[2])})
service.run()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def power_service(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(EXAMPLE), str(port)])
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_seed_example_serves_poweron_to_a_client_in_another_process(
    power_service: subprocess.Popen[bytes], port: int
) -> None:
    example = runpy.run_path(str(EXAMPLE))
    assert example["powerclient"]._conn is None  # built at import time, connects lazily
    client = example["PowerClient"](
        host=example["host"], port=port, username=example["username"],
        password=example["password"], key=example["key"],
    )

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
