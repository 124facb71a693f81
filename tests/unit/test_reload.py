"""``run --reload``'s pieces that need no process: the child's command line, the watched roots."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appd.cli.reload import supervisor_command, watch_roots
from appd.errors import AppdError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "manage.py", "appd", "run", "--reload"], ["manage.py", "appd", "run"]),
        (["python", "-m", "appd", "--config", "x.toml", "run", "--reload"],
         ["-m", "appd", "--config", "x.toml", "run"]),
        (["/venv/bin/python", "/venv/bin/appd", "run", "--reload", "-v", "2"],
         ["/venv/bin/appd", "run", "-v", "2"]),
    ],
)
def test_the_supervisor_runs_the_same_command_line_without_reload(
    argv: list[str], expected: list[str]
) -> None:
    assert supervisor_command(argv) == [sys.executable, *expected]


def test_a_command_line_without_reload_cannot_be_run_again() -> None:
    with pytest.raises(AppdError, match="from a command line only"):
        supervisor_command(["python", "script.py", "run"])


def test_watched_roots_are_existing_directories_none_inside_another(tmp_path: Path) -> None:
    (tmp_path / "site" / "shop").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    roots = watch_roots(
        [tmp_path / "site" / "shop", tmp_path / "site", tmp_path / "missing",
         tmp_path / "other", tmp_path / "site" / ".." / "site"]
    )
    assert sorted(roots) == [tmp_path / "other", tmp_path / "site"]
