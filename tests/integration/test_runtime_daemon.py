"""start_daemon with real processes: detach, pid file, launch failures, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runtime_entries import lines
from runtime_helpers import ENTRIES_DIR, Daemons, children, daemons_fixture, only_child  # noqa: F401
from support import kill_pids, pid_alive, read_pid, wait_for

from appd import DaemonRunStatus, RestartPolicy, start_daemon
from appd.runtime import read_live_pid


def _loop_args(directory: Path, **extra: object) -> dict[str, object]:
    return {
        "pid_filename": str(directory / "daemon.pid"),
        "daemon_entry": "runtime_entries:loop_until_quit",
        "daemon_args": {"directory": str(directory)},
        "stdout_filename": str(directory / "out.txt"),
        "stderr_filename": str(directory / "err.txt"),
        **extra,
    }


def _fd_targets(pid: int) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fd_dir.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return targets


def _umask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line")


def test_launched_only_once_the_guardian_holds_the_lock(daemons: Daemons, tmp_path: Path) -> None:
    status, pid = daemons.start(**_loop_args(tmp_path))
    assert status is DaemonRunStatus.LAUNCHED
    assert pid is not None
    # No waiting: the lock is held and the file written before start_daemon returns.
    assert read_pid(tmp_path / "daemon.pid") == pid
    assert read_live_pid(tmp_path / "daemon.pid") == pid
    executor = only_child(pid)
    wait_for(lambda: lines(tmp_path, "executor-starts") == [str(executor)], message="executor")


def test_the_daemon_is_detached_and_keeps_no_inherited_descriptor(
    daemons: Daemons, tmp_path: Path
) -> None:
    secret = tmp_path / "inherited-by-accident"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT)
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        status, pid = daemons.start(
            **_loop_args(tmp_path, working_directory=str(workdir), umask=0o027)
        )
    finally:
        os.close(fd)
    assert status is DaemonRunStatus.LAUNCHED and pid is not None
    executor = only_child(pid)
    wait_for(lambda: lines(tmp_path, "executor-starts"), message="executor start")
    for process in (pid, executor):
        assert os.getsid(process) != os.getsid(0), "not in a session of its own"
        assert os.getsid(process) != process, "a session leader could get a terminal"
        targets = _fd_targets(process)
        assert str(secret) not in targets
        assert os.readlink(f"/proc/{process}/fd/0") == os.devnull
        assert os.readlink(f"/proc/{process}/fd/1") == str(tmp_path / "out.txt")
        assert os.readlink(f"/proc/{process}/fd/2") == str(tmp_path / "err.txt")
        assert os.readlink(f"/proc/{process}/cwd") == str(workdir)
        assert _umask(process) == 0o027


def test_relative_paths_are_the_callers_and_entries_import_as_in_the_caller(
    daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    status, pid = daemons.start(
        pid_filename="daemon.pid",
        daemon_entry="runtime_entries:Holder.run",
        daemon_args={"directory": str(tmp_path)},
        stderr_filename="err.txt",
        working_directory=str(elsewhere),
    )
    assert status is DaemonRunStatus.LAUNCHED
    assert read_pid(tmp_path / "daemon.pid") == pid
    wait_for(lambda: lines(tmp_path, "executor-starts"), message="executor start")
    assert (tmp_path / "err.txt").exists()


def test_already_running_gives_the_live_pid(daemons: Daemons, tmp_path: Path) -> None:
    status, pid = daemons.start(**_loop_args(tmp_path))
    assert status is DaemonRunStatus.LAUNCHED
    again, holder = daemons.start(**_loop_args(tmp_path))
    assert (again, holder) == (DaemonRunStatus.ALREADY_RUNNING, pid)
    assert read_pid(tmp_path / "daemon.pid") == pid


def test_a_pid_file_left_by_kill_9_does_not_block_the_next_start(
    daemons: Daemons, tmp_path: Path
) -> None:
    status, first = daemons.start(**_loop_args(tmp_path))
    assert status is DaemonRunStatus.LAUNCHED and first is not None
    only_child(first)
    everything = daemons.snapshot()
    kill_pids(everything)
    wait_for(lambda: not any(pid_alive(p) for p in everything), message="tree killed")
    assert read_pid(tmp_path / "daemon.pid") == first, "kill -9 leaves the file behind"
    status, second = daemons.start(**_loop_args(tmp_path))
    assert status is DaemonRunStatus.LAUNCHED
    assert second != first
    assert read_live_pid(tmp_path / "daemon.pid") == second


def test_a_pid_file_holding_garbage_is_stale(daemons: Daemons, tmp_path: Path) -> None:
    (tmp_path / "daemon.pid").write_text("not a pid at all\n")
    status, pid = daemons.start(**_loop_args(tmp_path))
    assert status is DaemonRunStatus.LAUNCHED
    assert read_pid(tmp_path / "daemon.pid") == pid


_STARTER = textwrap.dedent(
    """
    import json, sys
    from appd import start_daemon
    status, pid = start_daemon(
        pid_filename=sys.argv[1] + "/daemon.pid",
        daemon_entry="runtime_entries:loop_until_quit",
        daemon_args={"directory": sys.argv[1]},
        stderr_filename=sys.argv[1] + "/err.txt",
    )
    print(json.dumps([status.name, pid]))
    with open(sys.argv[1] + "/callers", "a") as out:
        out.write("caller continued\\n")
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ENTRIES_DIR}


def test_ten_concurrent_starts_launch_exactly_one(daemons: Daemons, tmp_path: Path) -> None:
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, str(tmp_path)],
            stdout=subprocess.PIPE,
            env=_env(),
        )
        for _ in range(10)
    ]
    results = []
    for starter in starters:
        out, _ = starter.communicate(timeout=60)
        results.append(json.loads(out))
    launched = [pid for name, pid in results if name == "LAUNCHED"]
    for pid in launched:
        daemons.watch(pid)
    assert len(launched) == 1, results
    assert sorted(name for name, _ in results) == ["ALREADY_RUNNING"] * 9 + ["LAUNCHED"]
    assert all(pid == launched[0] for _, pid in results)
    assert read_live_pid(tmp_path / "daemon.pid") == launched[0]
    assert lines(tmp_path, "callers") == ["caller continued"] * 10


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("no_such_module_anywhere:main", "No module named 'no_such_module_anywhere'"),
        ("runtime_entries:missing", "has no attribute 'missing'"),
        ("runtime_entries:NOT_CALLABLE", "not a callable"),
    ],
)
def test_a_bad_entry_fails_to_launch_with_a_readable_reason(
    daemons: Daemons, tmp_path: Path, entry: str, reason: str
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as records:
        status, pid = daemons.start(**_loop_args(tmp_path, daemon_entry=entry))
    assert (status, pid) == (DaemonRunStatus.LAUNCH_FAILED, None)
    assert reason in (tmp_path / "err.txt").read_text()
    failures = [r for r in records if r["event"] == "daemon launch failed"]
    assert failures and reason in failures[0]["reason"]
    assert not (tmp_path / "daemon.pid").exists(), "a failed launch leaves no pid file"


def test_a_malformed_entry_raises_value_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="module:function"):
        start_daemon(pid_filename=str(tmp_path / "d.pid"), daemon_entry="no colon here")
    assert not (tmp_path / "d.pid").exists()


def test_an_uncreatable_pid_file_or_redirect_fails_to_launch(
    daemons: Daemons, tmp_path: Path
) -> None:
    missing = tmp_path / "missing-directory"
    status, _ = daemons.start(**_loop_args(tmp_path, pid_filename=str(missing / "d.pid")))
    assert status is DaemonRunStatus.LAUNCH_FAILED
    assert "cannot create pid file" in (tmp_path / "err.txt").read_text()
    status, _ = daemons.start(**_loop_args(tmp_path, stdout_filename=str(missing / "out")))
    assert status is DaemonRunStatus.LAUNCH_FAILED
    assert not (tmp_path / "daemon.pid").exists()


def test_kill_9_of_the_executor_restarts_it(daemons: Daemons, tmp_path: Path) -> None:
    status, pid = daemons.start(**_loop_args(tmp_path, restart_interval=0.1))
    assert status is DaemonRunStatus.LAUNCHED and pid is not None
    first = only_child(pid)
    wait_for(lambda: lines(tmp_path, "executor-starts"), message="first start")
    os.kill(first, signal.SIGKILL)
    second = wait_for(
        lambda: next((c for c in children(pid) if c != first), None), message="a new executor"
    )
    wait_for(lambda: len(lines(tmp_path, "executor-starts")) == 2, message="second start")
    assert lines(tmp_path, "executor-starts") == [str(first), str(second)]
    assert read_live_pid(tmp_path / "daemon.pid") == pid


def test_an_executor_that_exits_zero_is_not_restarted(daemons: Daemons, tmp_path: Path) -> None:
    status, pid = daemons.start(
        **_loop_args(
            tmp_path,
            daemon_entry="runtime_entries:exit_with",
            daemon_args={"directory": str(tmp_path), "code": 0},
            restart_interval=0.05,
        )
    )
    assert status is DaemonRunStatus.LAUNCHED and pid is not None
    wait_for(lambda: not pid_alive(pid), message="the guardian to finish")
    assert lines(tmp_path, "executor-starts") and len(lines(tmp_path, "executor-starts")) == 1
    assert not (tmp_path / "daemon.pid").exists()


def test_the_guardian_backs_off_and_gives_up_on_a_crashing_executor(
    daemons: Daemons, tmp_path: Path
) -> None:
    policy = RestartPolicy(interval=0.05, backoff=2.0, max_restarts=3, window=60.0)
    status, pid = daemons.start(
        **_loop_args(
            tmp_path,
            daemon_entry="runtime_entries:raise_error",
            daemon_args={"directory": str(tmp_path)},
            restart_interval=policy,
        )
    )
    assert status is DaemonRunStatus.LAUNCHED and pid is not None
    wait_for(lambda: not pid_alive(pid), message="the guardian to give up")
    assert len(lines(tmp_path, "executor-starts")) == 4, "the first start and three restarts"
    errors = (tmp_path / "err.txt").read_text()
    assert "the entry failed on purpose" in errors, "the traceback is logged"
    assert "giving up" in errors
    assert "max_restarts=3" in errors
    assert not (tmp_path / "daemon.pid").exists()


def test_without_restart_interval_a_crash_is_not_restarted(
    daemons: Daemons, tmp_path: Path
) -> None:
    status, pid = daemons.start(
        **_loop_args(
            tmp_path,
            daemon_entry="runtime_entries:exit_with",
            daemon_args={"directory": str(tmp_path), "code": 3},
        )
    )
    assert status is DaemonRunStatus.LAUNCHED and pid is not None
    wait_for(lambda: not pid_alive(pid), message="the guardian to stop")
    assert len(lines(tmp_path, "executor-starts")) == 1
    assert "exit code 3" in (tmp_path / "err.txt").read_text()


def test_no_caller_code_runs_twice_even_when_the_daemon_fails(
    daemons: Daemons, tmp_path: Path
) -> None:
    script = _STARTER.replace("runtime_entries:loop_until_quit", "runtime_entries:raise_error")
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE, env=_env(), timeout=60, check=True,
    )
    name, pid = json.loads(done.stdout)
    daemons.watch(pid)
    assert name == "LAUNCHED"
    wait_for(lambda: lines(tmp_path, "executor-starts"), message="the executor to run")
    wait_for(lambda: not (tmp_path / "daemon.pid").exists(), message="the guardian to stop")
    assert lines(tmp_path, "callers") == ["caller continued"]
    assert len(done.stdout.splitlines()) == 1


def test_a_logging_config_that_dictconfig_rejects_fails_to_launch(
    daemons: Daemons, tmp_path: Path
) -> None:
    bad = {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}
    status, pid = daemons.start(**_loop_args(tmp_path, logging_config=bad))
    assert (status, pid) == (DaemonRunStatus.LAUNCH_FAILED, None)
    assert "ValueError" in (tmp_path / "err.txt").read_text()
    assert not (tmp_path / "daemon.pid").exists()
