"""``appd run --reload``: the development loop, reloading services when their code changes.

The command runs the supervisor as a child process (the same command line without
``--reload``) and watches the project's Python files with ``watchfiles`` (what uvicorn uses).
When a file changes, after a short debounce, it asks the supervisor to reload, with SIGHUP:
the supervisor's own reload replaces the service processes, so whatever it guarantees
(requests in flight finish, fresh code) holds in development too.  A change to a module the
supervisor itself imported before any service (Django's settings, a plugin: what this process
imported too, as it read the configuration) cannot be reloaded that way: the supervisor is
then stopped (SIGTERM: requests in flight finish) and started again.  A supervisor that has
exited (a syntax error in ``services.py`` stopped it, say) is started again on the next
change.  SIGTERM and SIGINT stop the supervisor and then the watcher.

Never on by default: a file watcher has no place in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from appd.errors import AppdError
from appd.logging import get_logger

__all__ = ["DEBOUNCE_MS", "RELOAD_FLAG", "Reloader", "supervisor_command", "watch_roots"]

#: The command-line flag this module strips from the child's command line.
RELOAD_FLAG: Final = "--reload"

#: Longest wait, in milliseconds, for a burst of changes (an editor saving several files) to
#: end before the services are reloaded once.
DEBOUNCE_MS: Final = 400

#: Quiet time, in milliseconds, that ends a burst of changes.
STEP_MS: Final = 100

#: How often, in milliseconds, the watcher wakes up to see whether the supervisor still runs.
POLL_MS: Final = 200

_log = get_logger("appd.reload")


def supervisor_command(argv: Sequence[str] | None = None) -> list[str]:
    """The command line that runs the supervisor: this process's own, without ``--reload``.

    :param argv: the original command line (default :data:`sys.orig_argv`: the interpreter's
        options and ``-m appd`` or ``manage.py`` included).
    :raises AppdError: the command line does not hold ``--reload`` (``run --reload`` from
        ``call_command``, say): there is no command to run again.
    """
    words = list(sys.orig_argv if argv is None else argv)
    if RELOAD_FLAG not in words[1:]:
        raise AppdError("run --reload works from a command line only (appd or manage.py)")
    return [sys.executable, *(word for word in words[1:] if word != RELOAD_FLAG)]


def watch_roots(paths: Iterable[Path]) -> list[Path]:
    """Existing directories among ``paths``, each once, none inside another."""
    roots: list[Path] = []
    for path in sorted({p.resolve() for p in paths if p.is_dir()}, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(root) for root in roots):
            roots.append(path)
    return roots


def _imported_files() -> set[str]:
    """The source files of the modules this process has imported (never any service's)."""
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            files.add(str(Path(path).resolve()))
    return files


class Reloader:
    """Runs the supervisor as a child, and reloads it whenever a watched file changes.

    :param command: the supervisor's command line (see :func:`supervisor_command`).
    :param roots: directories whose Python files (and ``.toml`` files) are watched.
    """

    def __init__(self, command: Sequence[str], roots: Sequence[Path]) -> None:
        self.command = list(command)
        self.roots = list(roots)
        self.child: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._exit_code = 0

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the supervisor's last exit code.

        :raises AppdError: ``watchfiles`` is not installed.
        """
        try:
            from watchfiles import PythonFilter, watch
        except ImportError:
            raise AppdError(
                "run --reload needs watchfiles: pip install 'appd[reload]'"
            ) from None

        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            self._start()
            _log.info("watching for changes", roots=[str(r) for r in self.roots])
            for changes in watch(
                *self.roots,
                watch_filter=PythonFilter(extra_extensions=(".toml",)),
                stop_event=self._stop,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                rust_timeout=POLL_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                if self._stop.is_set():
                    break
                self._check_child()
                if changes:
                    self._reload(sorted({path for _, path in changes}))
        finally:
            self._stop_child()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._exit_code

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._signal_child(signal.SIGHUP)
            return
        self._stop.set()

    def _start(self) -> None:
        self.child = subprocess.Popen(self.command)
        _log.info("supervisor started", pid=self.child.pid)

    def _check_child(self) -> None:
        if self.child is not None and self.child.poll() is not None:
            self._exit_code = self.child.returncode
            _log.warning(
                "supervisor exited; it starts again when a watched file changes",
                exitcode=self.child.returncode,
            )
            self.child = None

    def _reload(self, paths: list[str]) -> None:
        if self.child is None:
            _log.info("files changed: starting the supervisor", files=paths)
            self._start()
            return
        loaded = sorted(set(paths) & _imported_files())
        if loaded:
            _log.info("supervisor's own modules changed: restarting", files=loaded)
            self._stop_child()
            self._start()
            return
        _log.info("files changed: reloading", files=paths, pid=self.child.pid)
        self._signal_child(signal.SIGHUP)

    def _signal_child(self, signum: int) -> None:
        if self.child is not None and self.child.poll() is None:
            os.kill(self.child.pid, signum)

    def _stop_child(self) -> None:
        child, self.child = self.child, None
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        while True:
            try:
                self._exit_code = child.wait()
                return
            except KeyboardInterrupt:
                continue
