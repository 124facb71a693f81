"""Daemon and worker entries the runtime integration tests start in real processes.

Each leaves traces in ``directory`` (one line per event, appended) so a test can see from
outside what happened inside: who started, with which pid, and who saw the quit request.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from appd import WorkerStartInfo, get_logger, quit_requested, sleep, start_workers
from appd.logging import current_role

#: Not callable: an entry naming it must fail to launch.
NOT_CALLABLE = 42


def note(directory: str, name: str, text: str) -> None:
    """Append one line to ``directory/name``."""
    with open(Path(directory, name), "a", encoding="utf-8") as out:
        out.write(text + "\n")


def lines(directory: str | os.PathLike[str], name: str) -> list[str]:
    """The lines :func:`note` appended so far (none when the file does not exist)."""
    try:
        return Path(directory, name).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _until_quit(directory: str) -> None:
    role = current_role()
    note(directory, f"{role}-starts", str(os.getpid()))
    get_logger("runtime_entries").info("running", answer=42)
    while not quit_requested():
        sleep(0.05)
    note(directory, "quit-seen", f"{role} {os.getpid()}")


def loop_until_quit(*, directory: str) -> None:
    """Run until quit is requested, noting the start and the quit."""
    _until_quit(directory)


class Holder:
    """For entries with a dotted attribute path (``module:Holder.run``)."""

    @staticmethod
    def run(*, directory: str) -> None:
        _until_quit(directory)


def exit_with(*, directory: str, code: int) -> None:
    """Note the start, then exit with ``code`` at once."""
    note(directory, f"{current_role()}-starts", str(os.getpid()))
    sys.exit(code)


def raise_error(*, directory: str) -> None:
    """Note the start, then fail with an exception."""
    note(directory, f"{current_role()}-starts", str(os.getpid()))
    raise RuntimeError("the entry failed on purpose")


def run_workers(
    *, directory: str, count: int = 3, entry: str = "runtime_entries:worker_loop"
) -> None:
    """Start ``count`` workers running ``entry`` and supervise them until quit."""
    start_workers(
        [
            WorkerStartInfo(
                pid_filename=f"{directory}/worker-{i}.pid",
                entry=entry,
                name=f"worker-{i}",
                stdout_filename=f"{directory}/worker-{i}.out",
                stderr_filename=f"{directory}/worker-{i}.err",
                args={"directory": directory},
            )
            for i in range(1, count + 1)
        ],
        restart_interval=0.1,
        check_interval=0.05,
        debug_filename=f"{directory}/debug.json",
    )
    note(directory, "quit-seen", f"{current_role()} {os.getpid()}")


def worker_loop(*, directory: str) -> None:
    """A worker that runs until quit."""
    _until_quit(directory)


def worker_done(*, directory: str) -> None:
    """A worker that finishes its work at once (exit 0)."""
    note(directory, f"{current_role()}-starts", str(os.getpid()))
