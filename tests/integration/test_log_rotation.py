"""``appd start``'s log file can be rotated: moved away, then SIGUSR1 (or a reload) starts a new
file, and every record is in one of the two, whole."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervision import Project, project_in
from support import read_pid, wait_for


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        proj.write_config({"alpha": {"processes": 2}})
        started = proj.appd("start", "--timeout", "30")
        assert started.returncode == 0, started.stderr
        try:
            yield proj
        finally:
            proj.appd("stop")


def _said(path: Path, text: str) -> int:
    """Records of ``text`` in the file (every line must be a whole JSON record)."""
    count = 0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == f"handler says {text}":
            count += 1
    return count


def _say(project: Project, text: str, times: int = 4) -> None:
    for _ in range(times):  # new connections: both processes answer some
        with project.client("alpha") as client:
            assert client.call("say", text) == text


def test_mv_then_sigusr1_starts_a_new_log_file_and_loses_nothing(project: Project) -> None:
    log = project.root / "run" / "appd.log"
    _say(project, "before")
    wait_for(lambda: _said(log, "before") == 4, message="the records before the move")
    rotated = log.with_name("appd.log.1")
    os.rename(log, rotated)
    pid = read_pid(project.pid_file)
    assert pid is not None
    os.kill(pid, signal.SIGUSR1)
    wait_for(log.exists, message="a new log file")
    # Every process reopens: a record from any of them lands in the new file.
    wait_for(lambda: (_say(project, "after", 2), _said(log, "after") >= 2)[1], timeout=10,
             message="records in the new file")
    total_after = _said(log, "after") + _said(rotated, "after")
    assert _said(rotated, "before") == 4
    _say(project, "later", 6)
    wait_for(lambda: _said(log, "later") == 6, message="every later record in the new file")
    assert _said(rotated, "later") == 0
    assert total_after >= 2


def test_mv_then_reload_starts_a_new_log_file(project: Project) -> None:
    log = project.root / "run" / "appd.log"
    _say(project, "before")
    wait_for(lambda: _said(log, "before") == 4, message="the records before the move")
    rotated = log.with_name("appd.log.1")
    os.rename(log, rotated)
    reloaded = project.appd("reload", "--timeout", "30")
    assert reloaded.returncode == 0, reloaded.stderr
    assert log.exists()
    _say(project, "after", 6)
    wait_for(lambda: _said(log, "after") == 6, message="every record after the reload")
    assert _said(rotated, "before") == 4 and _said(rotated, "after") == 0
