"""Pid files with real locks, held by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import pid_alive, read_pid, wait_for

from appd.errors import PidFileLocked
from appd.runtime.pidfile import PidFile, read_live_pid, remove_if_stale

_HOLDER = (
    "import sys\n"
    "from appd.runtime.pidfile import PidFile\n"
    "PidFile(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``tmp_path/app.pid``; killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "app.pid")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


def test_acquire_writes_the_pid_and_release_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with PidFile(path) as pid_file:
        assert pid_file.held
        assert read_pid(path) == os.getpid()
        assert read_live_pid(path) == os.getpid()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pid"], "no temporary left"
    assert not path.exists()
    assert read_live_pid(path) is None


def test_a_live_holder_blocks_and_is_named(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    path = tmp_path / "app.pid"
    with pytest.raises(PidFileLocked) as raised:
        PidFile(path).acquire()
    assert raised.value.pid == holder.pid
    assert str(holder.pid) in str(raised.value)
    assert read_live_pid(path) == holder.pid
    assert not remove_if_stale(path)
    assert path.exists()


def test_the_file_of_a_kill_9_holder_is_taken_over(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    path = tmp_path / "app.pid"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_pid(path) == holder.pid, "the file outlives its holder"
    assert read_live_pid(path) is None
    pid_file = PidFile(path)
    pid_file.acquire()
    try:
        assert read_pid(path) == os.getpid()
    finally:
        pid_file.release()


@pytest.mark.parametrize("content", ["", "garbage\n", "-5\n", "99999999999\n"])
def test_garbage_is_stale(tmp_path: Path, content: str) -> None:
    path = tmp_path / "app.pid"
    path.write_text(content)
    assert read_live_pid(path) is None
    with PidFile(path):
        assert read_pid(path) == os.getpid()


def test_remove_if_stale_removes_only_unlocked_files(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("12345\n")
    assert remove_if_stale(path)
    assert not path.exists()
    assert not remove_if_stale(path)


def test_a_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        PidFile(tmp_path / "missing" / "app.pid").acquire()


def test_concurrent_acquires_let_exactly_one_win(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    barrier = threading.Barrier(10)
    outcomes: list[object] = []
    files = [PidFile(path) for _ in range(10)]

    def contend(pid_file: PidFile) -> None:
        barrier.wait()
        try:
            pid_file.acquire()
            outcomes.append("won")
        except PidFileLocked as exc:
            outcomes.append(exc.pid)

    threads = [threading.Thread(target=contend, args=(f,)) for f in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert outcomes.count("won") == 1
        assert [o for o in outcomes if o != "won"] == [os.getpid()] * 9
    finally:
        for pid_file in files:
            pid_file.release()
    assert not path.exists()


def test_release_in_a_forked_child_leaves_the_parents_file(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with PidFile(path) as pid_file:
        child = os.fork()
        if child == 0:
            try:
                pid_file.release()
            finally:
                os._exit(0)
        wait_for(lambda: not pid_alive(child), message="the child")
        assert read_live_pid(path) == os.getpid()
