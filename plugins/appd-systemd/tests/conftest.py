"""Fixtures for appd-systemd's tests: a real notification socket, and appd run as a user runs it.

The repository's test helpers (polling with deadlines, process clean-up) are shared from
``tests/support.py``; the plugin is tested as installed (through its entry point).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_TESTS = HERE.parents[2] / "tests"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_TESTS))

import os  # noqa: E402
import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from support import descendants, free_port, kill_pids  # noqa: E402
from systemd_fixtures import SERVICES_PY, NotifySocket, Project  # noqa: E402


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    """A real notification socket, at a path or at an abstract address (``@name``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address: str = str(tmp_path / "notify.sock")
        sock.bind(address)
        name = address
    else:
        abstract = f"appd-systemd-test-{os.getpid()}-{os.urandom(4).hex()}"
        sock.bind(b"\0" + abstract.encode())
        name = "@" + abstract
    receiver = NotifySocket(sock, name)
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    before = set(descendants())
    (tmp_path / "services.py").write_text(SERVICES_PY)
    proj = Project(tmp_path, {"echo": free_port()})
    proj.write_config()
    try:
        yield proj
    finally:
        for proc in proj.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kill_pids(set(descendants()) - before)
