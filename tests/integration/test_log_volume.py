"""Log volume stays under control, in the real output of ``appd run``: an ``AppdError`` a handler
raises on purpose is one line with no traceback; unexpected exceptions keep their traceback but
are rate-limited per service and exception type, with a summary; client-controlled strings are
clipped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervision import Project, project_in

from appd import RemoteError
from appd.transport.errorlog import CLIENT_TEXT_LIMIT, TRACEBACKS_LOGGED

DELIBERATE = '''

from appd import AppdError


class InvalidOutlet(AppdError):
    """A client's bad outlet number."""


class GammaService(Base):
    @command
    def outlet(self, number):
        raise InvalidOutlet(f"no outlet {number}")
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        services = proj.root / "services.py"
        services.write_text(services.read_text().replace(
            "class GammaService(Base):\n    pass\n", ""
        ) + DELIBERATE)
        proj.write_config({"gamma": {"concurrency": 4}})
        proj.run()
        yield proj


def _raised(project: Project) -> list[dict[str, object]]:
    return [r for r in project.records() if r.get("event") == "handler raised"]


def test_200_deliberate_errors_write_at_most_200_one_line_records(project: Project) -> None:
    with project.client("gamma") as client:
        for n in range(200):
            with pytest.raises(RemoteError):
                client.call("outlet", n)
    assert project.stop() == 0
    raised = _raised(project)
    assert 0 < len(raised) <= 200
    assert all("exception" not in r for r in raised), raised[0]
    assert raised[0]["error_type"] == "InvalidOutlet" and "no outlet" in str(raised[0]["error"])
    lines = [line for line in project.log.read_text().splitlines() if "InvalidOutlet" in line]
    assert len(lines) <= 200 and all(len(line) < 1000 for line in lines)


def test_2000_unexpected_exceptions_in_10_s_write_bounded_tracebacks_and_a_summary(
    project: Project,
) -> None:
    start = time.monotonic()
    with project.client("gamma") as client:
        for _ in range(2000):
            with pytest.raises(RemoteError):
                client.call("fail", "kaboom")
    assert time.monotonic() - start < 10
    assert project.stop() == 0  # the drain flushes the summary
    records = project.records()
    tracebacks = [r for r in records if r.get("event") == "handler raised"]
    assert 1 <= len(tracebacks) <= 2 * TRACEBACKS_LOGGED
    assert all("ValueError: kaboom" in str(r["exception"]) for r in tracebacks)
    summaries = [r for r in records if r.get("event") == "handler failures not logged"]
    assert summaries, "no summary of the failures not logged"
    assert sum(int(s["suppressed"]) for s in summaries) + len(tracebacks) == 2000  # type: ignore[call-overload]
    assert project.log.stat().st_size < 200_000


def test_a_long_command_name_is_clipped_in_records(project: Project) -> None:
    name = "x" * 6000
    with project.client("gamma") as client, pytest.raises(RemoteError):
        client.call(name)
    assert project.stop() == 0
    [record] = _raised(project)
    assert len(str(record["cmd"])) < CLIENT_TEXT_LIMIT + 50
    assert len(str(record["error"])) < CLIENT_TEXT_LIMIT + 50
    lines = [line for line in project.log.read_text().splitlines() if "x" * 100 in line]
    assert lines and all(len(line) < 2000 for line in lines)
