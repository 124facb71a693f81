"""The supervisor under reloads, crashes and shutdowns: real processes, real signals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervision import Callers, Project, project_in
from support import wait_for


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        yield proj


def reload_sequence(project: Project) -> list[str]:
    return [
        r["event"] for r in project.records()
        if r.get("event") in ("reload started", "reload finished")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_calls_never_fail_while_sighup_arrives_every_3_seconds(
    project: Project, processes: int
) -> None:
    project.write_config({"alpha": {"processes": processes}})
    project.run()
    before = set(project.pids("alpha"))
    with Callers(project, "alpha", 8) as callers:
        wait_for(lambda: callers.replies > 50, message="the callers to get going")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < deadline:
                project.hup()
    assert callers.failures == []
    assert max(callers.gaps) < 1.0, callers.gaps
    assert callers.pids - before, "no call reached a process started by a reload"
    sequence = reload_sequence(project)
    assert sequence.count("reload started") >= 4
    assert sequence[::2] == ["reload started"] * len(sequence[::2])
    assert sequence[1::2] == ["reload finished"] * len(sequence[1::2])
