"""Service processes write to the descriptors ``appd run`` was given (inherited, never reopened
by path): a Unix stream socket works, and a file opened without O_APPEND loses no record."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from supervision import Project, project_in
from support import wait_for


def _start(project: Project, stderr: IO[bytes] | socket.socket | int) -> subprocess.Popen[bytes]:
    fd = stderr if isinstance(stderr, int) else stderr.fileno()
    project.proc = subprocess.Popen(
        [sys.executable, "-m", "appd", "run"], cwd=project.root, env=project.env(),
        stdout=fd, stderr=fd,
    )
    return project.proc


def _serves(project: Project, names: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        assert project.proc is not None and project.proc.poll() is None
        services = project.status().get("services", {})
        return all(services.get(n, {}).get("state") == "ready" for n in names)
    return check


def _answers_without_restarts(project: Project, names: list[str]) -> None:
    wait_for(_serves(project, names), timeout=30, message="every service to be ready")
    for name in names:
        with project.client(name) as client:
            assert client.call("greet")
        assert project.status()["services"][name]["restarts"] == 0


def _json_lines(data: bytes) -> list[dict[str, Any]]:
    lines = data.decode().splitlines()
    assert lines
    return [json.loads(line) for line in lines]


@pytest.mark.timeout(90)
def test_run_with_output_on_a_unix_stream_socket(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received = bytearray()

    def drain() -> None:
        while chunk := ours.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    names = ["alpha", "beta"]
    with project_in(tmp_path) as project:
        project.write_config({name: {"processes": 2} for name in names})
        _start(project, theirs)
        theirs.close()
        _answers_without_restarts(project, names)
        assert project.stop() == 0
    reader.join(timeout=10)
    records = _json_lines(bytes(received))
    assert {r.get("service") for r in records} >= set(names)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["wb", "ab"])
def test_run_with_output_to_a_file_keeps_every_record_whole(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out.log"
    names = ["alpha", "beta"]
    with project_in(tmp_path) as project, out.open(mode) as file:
        project.write_config({name: {"processes": 2} for name in names})
        _start(project, file)
        _answers_without_restarts(project, names)
        assert project.stop() == 0
    records = _json_lines(out.read_bytes())
    started = [r for r in records if r.get("event") == "service process started"]
    assert len(started) == 4
    assert {r.get("service") for r in records} >= set(names)
