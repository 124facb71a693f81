"""Session-wide guards: every process a test starts is ours to find, and none may outlive it.

The test process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): daemons
that double-fork away from a test are re-parented to pytest rather than to init, so at the end of
the session every leftover process is a descendant we can list, report and kill by pid.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from support import descendants, kill_pids, pid_alive, reap_zombies

# Performance is measured in benchmarks, not in tests: on a shared machine one slow example
# must not fail a property test, so examples have no deadline.
settings.register_profile("appd", deadline=None)
settings.load_profile("appd")

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 5.0
    left = descendants()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        reap_zombies()
        left = descendants()
    if left:
        described = []
        for pid in left:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                cmdline = b"?"
            described.append(f"{pid} ({cmdline.decode(errors='replace').strip()})")
        kill_pids(left)
        sys.stderr.write(
            "\nERROR: tests left processes behind (killed now): " + ", ".join(described) + "\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reap_zombies()


@pytest.fixture
def pids_to_kill() -> Iterator[list[int]]:
    """A list a test appends pids to; each one still alive at teardown is SIGKILLed."""
    pids: list[int] = []
    yield pids
    kill_pids(pid for pid in pids if pid_alive(pid))
