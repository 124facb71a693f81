"""Logging in daemon processes: logging_config honoured, role and pid on every record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runtime_entries import lines
from runtime_helpers import Daemons, daemons_fixture, only_child  # noqa: F401
from support import read_pid, wait_for

from appd import DaemonRunStatus


def _records(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _find(path: Path, event: str) -> dict[str, Any] | None:
    return next((r for r in _records(path) if r.get("event") == event), None)


def test_logging_config_is_honoured_with_relative_paths_and_records_carry_role_and_pid(
    daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bare": {"format": "%(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": "logs/daemon.log",
                     "formatter": "bare"}
        },
        "root": {"handlers": ["file"], "level": "INFO"},
    }
    status, guardian = daemons.start(
        pid_filename="daemon.pid",
        daemon_entry="runtime_entries:loop_until_quit",
        daemon_args={"directory": str(tmp_path)},
        logging_config=config,
    )
    assert status is DaemonRunStatus.LAUNCHED
    executor = only_child(guardian or 0)
    log_file = tmp_path / "logs" / "daemon.log"
    running = wait_for(lambda: _find(log_file, "running"), message="the executor's record")
    assert (running["role"], running["pid"], running["answer"]) == ("executor", executor, 42)
    launched = _find(log_file, "daemon launched")
    assert launched is not None
    assert (launched["role"], launched["pid"]) == ("guardian", guardian)
    assert read_pid(tmp_path / "daemon.pid") == guardian


def test_without_logging_config_json_lines_go_to_stderr_with_the_worker_name_as_role(
    daemons: Daemons, tmp_path: Path
) -> None:
    status, _ = daemons.start(
        pid_filename=str(tmp_path / "daemon.pid"),
        daemon_entry="runtime_entries:run_workers",
        daemon_args={"directory": str(tmp_path), "count": 1},
        stderr_filename=str(tmp_path / "err.txt"),
    )
    assert status is DaemonRunStatus.LAUNCHED
    wait_for(lambda: lines(tmp_path, "worker-1-starts"), message="the worker")
    (worker_pid,) = map(int, lines(tmp_path, "worker-1-starts"))
    record = wait_for(lambda: _find(tmp_path / "worker-1.err", "running"), message="record")
    assert (record["role"], record["pid"]) == ("worker-1", worker_pid)
    started = wait_for(lambda: _find(tmp_path / "err.txt", "worker started"), message="record")
    assert started["role"] == "executor"
    assert started["worker"] == "worker-1"
