"""start_workers with real processes, run inside a daemon's executor as the seed does."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from runtime_entries import lines
from runtime_helpers import Daemons, children, daemons_fixture, only_child  # noqa: F401
from support import descendants, pid_alive, read_json, read_pid, wait_for

from appd import DaemonRunStatus, WorkerStartInfo, start_workers
from appd.runtime import read_live_pid


def _start(daemons: Daemons, directory: Path, **args: object) -> tuple[int, int]:
    status, guardian = daemons.start(
        pid_filename=str(directory / "daemon.pid"),
        daemon_entry="runtime_entries:run_workers",
        daemon_args={"directory": str(directory), **args},
        stderr_filename=str(directory / "err.txt"),
        restart_interval=0.1,
    )
    assert status is DaemonRunStatus.LAUNCHED and guardian is not None
    return guardian, only_child(guardian)


def _worker_pids(directory: Path, count: int = 3) -> list[int]:
    def all_live() -> list[int] | None:
        pids = [read_live_pid(directory / f"worker-{i}.pid") for i in range(1, count + 1)]
        return None if None in pids else [p for p in pids if p is not None]

    return wait_for(all_live, message="every worker holding its pid file")


def test_each_worker_runs_in_its_own_process_with_its_own_locked_pid_file(
    daemons: Daemons, tmp_path: Path
) -> None:
    _, executor = _start(daemons, tmp_path)
    workers = _worker_pids(tmp_path)
    assert len(set(workers)) == 3
    assert sorted(children(executor)) == sorted(workers)
    for i, pid in enumerate(workers, start=1):
        wait_for(  # the worker's role is its name
            lambda i=i, pid=pid: lines(tmp_path, f"worker-{i}-starts") == [str(pid)],
            message=f"worker-{i} to note its start under its own name",
        )
        assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
        assert os.readlink(f"/proc/{pid}/fd/2") == str(tmp_path / f"worker-{i}.err")
    # The executor writes the debug file once it has started every worker, which by then may
    # have noted their starts already.
    debug = wait_for(lambda: read_json(tmp_path / "debug.json"),
                     message="the debug file to be written")
    assert {name: w["pid"] for name, w in debug["workers"].items()} == {
        f"worker-{i}": pid for i, pid in enumerate(workers, start=1)
    }
    assert all(w["state"] == "running" and w["restarts"] == 0 for w in debug["workers"].values())


def test_kill_9_of_a_worker_restarts_it(daemons: Daemons, tmp_path: Path) -> None:
    _, executor = _start(daemons, tmp_path)
    first = _worker_pids(tmp_path)
    # A worker holds its pid file before its entry runs: kill it only once it has run.
    wait_for(lambda: lines(tmp_path, "worker-2-starts") == [str(first[1])],
             message="worker-2 to note its start")
    os.kill(first[1], signal.SIGKILL)
    replacement = wait_for(
        lambda: (p := read_live_pid(tmp_path / "worker-2.pid")) not in (None, first[1]) and p,
        message="worker-2 restarted",
    )
    assert replacement in children(executor)
    wait_for(
        lambda: lines(tmp_path, "worker-2-starts") == [str(first[1]), str(replacement)],
        message="the replacement to run the entry",
    )
    assert [read_live_pid(tmp_path / f"worker-{i}.pid") for i in (1, 3)] == [first[0], first[2]]

    def restarted() -> dict[str, object] | None:
        worker = json.loads((tmp_path / "debug.json").read_text())["workers"]["worker-2"]
        return worker if worker["restarts"] == 1 and worker["state"] == "running" else None

    worker = wait_for(restarted, message="the debug file to show the restart")
    assert worker["pid"] == replacement
    assert worker["last_exit"] == "killed by SIGKILL"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_quit_signal_stops_everything_within_the_grace_period_and_removes_every_pid_file(
    daemons: Daemons, tmp_path: Path, signum: signal.Signals
) -> None:
    guardian, executor = _start(daemons, tmp_path)
    workers = _worker_pids(tmp_path)
    everything = daemons.snapshot()
    assert set(everything) == {guardian, executor, *workers}
    os.kill(guardian, signum)
    wait_for(lambda: not any(pid_alive(p) for p in everything), timeout=5.0,
             message="the whole tree to stop within the grace period")
    seen = lines(tmp_path, "quit-seen")
    assert sorted(seen) == sorted(
        [f"executor {executor}"] + [f"worker-{i} {p}" for i, p in enumerate(workers, start=1)]
    ), "quit_requested() became true in executor and workers"
    leftover = [p.name for p in tmp_path.glob("*.pid")]
    assert leftover == []


def test_after_kill_9_of_the_guardian_no_process_of_the_tree_lives_3_s_later(
    daemons: Daemons, tmp_path: Path
) -> None:
    guardian, _ = _start(daemons, tmp_path)
    _worker_pids(tmp_path)
    everything = daemons.snapshot()
    assert len(everything) == 5
    os.kill(guardian, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in everything), timeout=3.0,
             message="no orphan left")


def test_a_worker_that_exits_zero_is_not_restarted_and_start_workers_returns(
    daemons: Daemons, tmp_path: Path
) -> None:
    guardian, _ = _start(daemons, tmp_path, count=2, entry="runtime_entries:worker_done")
    wait_for(lambda: not pid_alive(guardian), message="the daemon to finish")
    assert len(lines(tmp_path, "worker-1-starts")) == 1
    assert len(lines(tmp_path, "worker-2-starts")) == 1
    debug = json.loads((tmp_path / "debug.json").read_text())
    assert {w["state"] for w in debug["workers"].values()} == {"exited"}
    assert not list(tmp_path.glob("*.pid"))


def test_duplicate_worker_names_raise_before_anything_starts(tmp_path: Path) -> None:
    infos = [
        WorkerStartInfo(pid_filename=str(tmp_path / f"{i}.pid"), entry="m:f", name="same")
        for i in range(2)
    ]
    before = set(descendants())
    with pytest.raises(ValueError, match="duplicate worker name 'same'"):
        start_workers(infos)
    assert set(descendants()) <= before
    assert not list(tmp_path.iterdir())


def test_a_malformed_worker_entry_raises_before_anything_starts(tmp_path: Path) -> None:
    infos = [WorkerStartInfo(pid_filename=str(tmp_path / "w.pid"), entry="nocolon", name="w")]
    with pytest.raises(ValueError, match="module:function"):
        start_workers(infos)


def test_the_worker_pid_file_holds_the_worker_pid(daemons: Daemons, tmp_path: Path) -> None:
    _start(daemons, tmp_path, count=1)
    (pid,) = _worker_pids(tmp_path, count=1)
    assert read_pid(tmp_path / "worker-1.pid") == pid
