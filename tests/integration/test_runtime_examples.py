"""The two examples under docs/examples, run as a user runs them: from their own directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_helpers import Daemons, daemons_fixture  # noqa: F401
from support import pid_alive, read_json, wait_for

from appd.runtime import read_live_pid

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _run_example(name: str, directory: Path, daemons: Daemons) -> int:
    shutil.copy(EXAMPLES / name, directory / name)
    done = subprocess.run(
        [sys.executable, name], cwd=directory, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.strip().splitlines()[0]
    assert first_line.startswith("Daemon launched, pid = "), done.stdout
    pid = int(first_line.rsplit(" ", 1)[1])
    daemons.watch(pid)
    return pid


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    if not EXAMPLES.is_dir():
        pytest.skip("the examples are not beside the tests")
    return tmp_path


def test_example_1_loops_until_quit_and_cleans_up(daemons: Daemons, example_dir: Path) -> None:
    data = example_dir / ".data"
    guardian = _run_example("test1.py", example_dir, daemons)
    assert read_live_pid(data / "test1.pid") == guardian
    wait_for(lambda: "I am running" in (data / "test1.log").read_text(), message="the loop")
    assert "foo=1, bar=2" in (data / "test1.log").read_text()
    again = subprocess.run(
        [sys.executable, "test1.py"], cwd=example_dir, capture_output=True, text=True,
        timeout=60,
    )
    assert "ALREADY_RUNNING" in again.stdout and str(guardian) in again.stdout
    everything = daemons.snapshot()
    os.kill(guardian, signal.SIGTERM)
    wait_for(lambda: not any(pid_alive(p) for p in everything), message="the daemon to stop")
    assert "quit requested, bye" in (data / "test1.log").read_text()
    assert not (data / "test1.pid").exists()


def test_example_2_runs_three_workers(daemons: Daemons, example_dir: Path) -> None:
    data = example_dir / ".data"
    guardian = _run_example("test2.py", example_dir, daemons)

    def workers() -> list[int] | None:
        pids = [read_live_pid(data / f"worker-{i}.pid") for i in (1, 2, 3)]
        return None if None in pids else [p for p in pids if p is not None]

    pids = wait_for(workers, message="three workers")
    assert len(set(pids)) == 3
    wait_for(lambda: all("color=" in (data / f"worker-{i}.log").read_text() for i in (1, 2, 3)),
             message="each worker's own log")
    debug = wait_for(  # written once every worker is started: maybe after their first lines
        lambda: read_json(data / "debug.json"),
        message="the debug file to be written",
    )
    assert sorted(debug["workers"]) == ["worker-1", "worker-2", "worker-3"]
    everything = daemons.snapshot()
    assert guardian in everything and len(everything) == 5
    os.kill(guardian, signal.SIGTERM)
    wait_for(lambda: not any(pid_alive(p) for p in everything), message="the daemon to stop")
    assert not list(data.glob("*.pid"))


def test_example_1_runs_as_a_script_from_its_own_directory(
    daemons: Daemons, example_dir: Path
) -> None:
    command = "cd docs/examples && python3 test1.py"
    (example_dir / "docs").mkdir()
    shutil.copytree(EXAMPLES, example_dir / "docs" / "examples",
                    ignore=shutil.ignore_patterns(".data", "__pycache__"))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        command, shell=True, cwd=example_dir, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": path},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Daemon launched, pid = "), done.stdout
    guardian = int(done.stdout.split()[-1])
    daemons.watch(guardian)
    pid_file = example_dir / "docs" / "examples" / ".data" / "test1.pid"
    assert read_live_pid(pid_file) == guardian
    everything = daemons.snapshot()
    os.kill(guardian, signal.SIGTERM)
    wait_for(lambda: not any(pid_alive(p) for p in everything), message="the daemon to stop")
