"""Starting daemons from tests, finding their processes, and always cleaning them up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import descendants, kill_pids, pid_alive, wait_for

from appd import DaemonRunStatus, start_daemon

#: The directory holding the entry modules, for subprocesses that must import them.
ENTRIES_DIR = str(Path(__file__).parent)


def children(pid: int) -> list[int]:
    """The live direct children of ``pid``."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [child for child in map(int, raw.split()) if pid_alive(child)]


def only_child(pid: int) -> int:
    """Wait until ``pid`` has exactly one live child and return it."""
    found = wait_for(lambda: children(pid) if len(children(pid)) == 1 else None,
                     message=f"exactly one child of {pid}")
    return found[0]


def tree(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    return [p for p in (pid, *descendants(pid)) if pid_alive(p)]


class Daemons:
    """Starts daemons for one test and kills whatever is left of them at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.roots: list[int] = []
        self.seen: set[int] = set()

    def start(self, **kwargs: Any) -> tuple[DaemonRunStatus, int | None]:
        """``start_daemon`` with the given arguments; a launched guardian is remembered."""
        status, pid = start_daemon(**kwargs)
        if status is DaemonRunStatus.LAUNCHED and pid is not None:
            self.watch(pid)
        return status, pid

    def watch(self, pid: int) -> None:
        """Kill ``pid`` and its descendants at the end of the test."""
        self.roots.append(pid)

    def snapshot(self) -> list[int]:
        """Every live process of every watched tree (remembered for the clean-up too)."""
        alive = [p for root in self.roots for p in tree(root)]
        self.seen.update(alive)
        return alive

    def cleanup(self) -> None:
        pids = set(self.snapshot()) | self.seen
        kill_pids(pids)
        wait_for(lambda: not any(pid_alive(p) for p in pids), message="daemons gone")


@pytest.fixture(name="daemons")
def daemons_fixture(tmp_path: Path) -> Iterator[Daemons]:
    """A :class:`Daemons` whose processes are all killed at teardown, even on failure."""
    started = Daemons(tmp_path)
    try:
        yield started
    finally:
        started.cleanup()
