"""Service processes write to the descriptors ``appd run`` was given (inherited, never reopened
by path): a Unix stream socket works, and a file opened without O_APPEND loses no record."""

from __future__ import annotations

import json
import os
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


#: Records each service's handlers log in a test (see :func:`_said`).
SAID = 10


def _answers_without_restarts(project: Project, names: list[str]) -> None:
    wait_for(_serves(project, names), timeout=30, message="every service to be ready")
    for name in names:
        for _ in range(SAID):  # a new connection each: both processes log some
            with project.client(name) as client:
                assert client.call("say", f"hello {name}") == f"hello {name}"
        assert project.status()["services"][name]["restarts"] == 0


def _said(records: list[dict[str, Any]], names: list[str]) -> None:
    """Every record the handlers logged, and every process's start, arrived."""
    for name in names:
        said = [r for r in records if r.get("event") == f"handler says hello {name}"]
        assert len(said) == SAID, (name, len(said))
    started = [r for r in records if r.get("event") == "service process started"]
    assert len(started) == 2 * len(names)


#: The services of each test, two processes each.
NAMES = ["alpha", "beta"]


def _run_and_stop(
    tmp_path: Path, output: IO[bytes] | socket.socket | int, *, hand_over: bool
) -> None:
    """``appd run`` in a project in ``tmp_path`` with its output on ``output``: every service
    of :data:`NAMES` answers without a restart, and ``appd run`` stops cleanly. With
    ``hand_over``, this process's copy of ``output`` is closed once ``appd run`` holds it (the
    reader then sees the end when the last writer exits)."""
    with project_in(tmp_path) as project:
        project.write_config({name: {"processes": 2} for name in NAMES})
        _start(project, output)
        if hand_over:
            if isinstance(output, int):
                os.close(output)
            else:
                output.close()
        _answers_without_restarts(project, NAMES)
        assert project.stop() == 0


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
    _run_and_stop(tmp_path, theirs, hand_over=True)
    reader.join(timeout=10)
    records = _json_lines(bytes(received))
    assert {r.get("service") for r in records} >= set(NAMES)
    _said(records, NAMES)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["wb", "ab"])
def test_run_with_output_to_a_file_keeps_every_record_whole(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out.log"
    with out.open(mode) as file:
        _run_and_stop(tmp_path, file, hand_over=False)
    records = _json_lines(out.read_bytes())
    assert {r.get("service") for r in records} >= set(NAMES)
    _said(records, NAMES)


@pytest.mark.timeout(90)
def test_run_with_output_to_a_pipe_keeps_every_record_whole(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        _run_and_stop(tmp_path, write_end, hand_over=True)
        reader.join(timeout=10)
    finally:
        os.close(read_end)
    _said(_json_lines(bytes(received)), NAMES)


@pytest.mark.timeout(90)
def test_run_with_output_on_a_datagram_socket_sends_one_record_per_datagram(
    tmp_path: Path,
) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagrams: list[bytes] = []
    ours.settimeout(0.2)
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                datagrams.append(ours.recv(1 << 20))
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    _run_and_stop(tmp_path, theirs, hand_over=True)
    wait_for(lambda: any(b"stopped" in d for d in datagrams[-3:]), timeout=5,
             message="the last records")
    done.set()
    reader.join(timeout=5)
    records = []
    for datagram in datagrams:
        assert datagram.endswith(b"\n") and datagram.count(b"\n") == 1, datagram[:200]
        records.append(json.loads(datagram))
    _said(records, NAMES)
