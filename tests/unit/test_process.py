"""spawn, reap and stop_processes with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import kill_pids, pid_alive, read_pid, wait_for

from appd import quit_requested, sleep
from appd.runtime.pidfile import read_live_pid
from appd.runtime.process import ExitInfo, reap, spawn, stop_processes
from appd.runtime.quit import clear_quit, request_quit


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test spawned; killed and reaped at teardown."""
    pids: list[int] = []
    yield pids
    kill_pids(pids)
    for pid in pids:
        wait_for(lambda pid=pid: reap([pid]) or not pid_alive(pid), message=f"reap {pid}")


def _exit_of(pid: int) -> ExitInfo:
    return wait_for(lambda: next(iter(reap([pid])), None), message=f"{pid} to exit")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_a_target_that_returns_exits_zero(spawned: list[int], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pid = spawn(lambda: _write(marker, str(os.getpid())), role="unit")
    spawned.append(pid)
    assert _exit_of(pid) == ExitInfo(pid, 0, None)
    assert marker.read_text() == str(pid)


def test_a_raising_target_exits_one_with_its_traceback_logged(
    spawned: list[int], tmp_path: Path
) -> None:
    def fail() -> None:
        raise RuntimeError("broken on purpose")

    pid = spawn(fail, role="unit", stderr_filename=str(tmp_path / "err"))
    spawned.append(pid)
    assert _exit_of(pid).exitcode == 1
    errors = (tmp_path / "err").read_text()
    assert "RuntimeError: broken on purpose" in errors
    assert '"role": "unit"' in errors


def test_sys_exit_gives_its_code(spawned: list[int]) -> None:
    pid = spawn(lambda: sys.exit(7), role="unit")
    spawned.append(pid)
    assert _exit_of(pid).exitcode == 7


def test_the_child_gets_devnull_appended_files_and_only_the_kept_descriptors(
    spawned: list[int], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.write_text("earlier\n")
    kept_read, kept_write = os.pipe()
    dropped = os.open(tmp_path / "dropped", os.O_WRONLY | os.O_CREAT)

    def child() -> None:
        print("stdin:", repr(sys.stdin.read()))
        try:
            os.fstat(dropped)
            print("dropped is open")
        except OSError:
            print("dropped is closed")
        os.write(kept_write, b"kept works")

    try:
        pid = spawn(child, role="unit", stdout_filename=str(out), keep_fds=(kept_write,))
        spawned.append(pid)
        assert _exit_of(pid).exitcode == 0
        assert os.read(kept_read, 100) == b"kept works"
    finally:
        for fd in (kept_read, kept_write, dropped):
            os.close(fd)
    assert out.read_text() == "earlier\nstdin: ''\ndropped is closed\n"


def test_the_child_has_its_own_fresh_quit_flag(spawned: list[int], tmp_path: Path) -> None:
    request_quit()
    try:
        pid = spawn(lambda: _write(tmp_path / "flag", str(quit_requested())), role="unit")
    finally:
        clear_quit()
    spawned.append(pid)
    _exit_of(pid)
    assert (tmp_path / "flag").read_text() == "False"


def test_the_pid_file_is_held_while_the_target_runs(spawned: list[int], tmp_path: Path) -> None:
    path = tmp_path / "child.pid"

    def run() -> None:
        while not quit_requested():
            sleep(0.02)

    pid = spawn(run, role="unit", pid_filename=str(path))
    spawned.append(pid)
    wait_for(lambda: read_live_pid(path) == pid, message="the child's lock")
    started = time.monotonic()
    (ended,) = stop_processes([pid], grace=5.0)
    assert ended == ExitInfo(pid, 0, None), "SIGTERM raised the quit flag; target returned"
    assert time.monotonic() - started < 2.0
    assert not path.exists()


def test_a_second_holder_of_the_same_pid_file_exits_one(
    spawned: list[int], tmp_path: Path
) -> None:
    path = tmp_path / "child.pid"
    first = spawn(lambda: sleep(30), role="first", pid_filename=str(path))
    spawned.append(first)
    wait_for(lambda: read_live_pid(path) == first, message="the first lock")
    second = spawn(lambda: None, role="second", pid_filename=str(path),
                   stderr_filename=str(tmp_path / "err"))
    spawned.append(second)
    assert _exit_of(second).exitcode == 1
    assert "is locked by process" in (tmp_path / "err").read_text()
    assert read_pid(path) == first


def test_stop_processes_escalates_to_sigkill_after_the_grace_period(
    spawned: list[int], tmp_path: Path
) -> None:
    ready = tmp_path / "ignoring"

    def stubborn() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ready.write_text("yes")
        while True:
            time.sleep(0.05)

    pid = spawn(stubborn, role="unit")
    spawned.append(pid)
    wait_for(ready.exists, message="the child to ignore SIGTERM")
    started = time.monotonic()
    (ended,) = stop_processes([pid], grace=0.5)
    assert ended == ExitInfo(pid, None, signal.SIGKILL)
    assert time.monotonic() - started >= 0.5
    assert ended.describe() == "killed by SIGKILL"


def test_reap_reports_a_pid_that_is_not_a_child_as_unknown() -> None:
    (info,) = reap([1])
    assert info == ExitInfo(1, None, None)
    assert info.describe() == "status unknown"


_ORPHANED = textwrap.dedent(
    """
    import sys
    from appd.runtime.process import spawn
    from appd import sleep
    child = spawn(lambda: sleep(60), role="orphan")
    print(child, flush=True)
    sleep(60)
    """
)


def test_children_die_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _ORPHANED], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()
        parent.wait()
        wait_for(lambda: not pid_alive(child), timeout=2.0, message="the child to die")
    finally:
        parent.kill()
        parent.wait()
