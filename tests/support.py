"""Helpers for tests that start real processes: polling with deadlines, liveness, clean-up."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a running process (a zombie counts as dead, and is reaped if ours)."""
    fields = _stat_fields(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def descendants(root: int | None = None) -> list[int]:
    """Every live process below ``root`` (this process by default)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each pid that is still alive; never by name."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int | None:
    """Stop a child as an operator would: SIGTERM, then SIGKILL if it is still running after
    ``grace`` seconds.  Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def reap_zombies() -> None:
    """Collect every exited child of this process (orphans re-parented to us included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def true_in_a_forked_child(check: Callable[[], bool]) -> bool:
    """Whether ``check()`` is true in a forked child of this process (which exits at once,
    whatever happens, and never runs the test session's code)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if check() else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid written in a pid file, or None when it is missing or not a number."""
    try:
        return int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pip(*args: str) -> None:
    """Run pip quietly in the interpreter running the tests."""
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=300,
    )


def build_wheel(source: Path, out: Path) -> Path:
    """Build the wheel of the distribution in ``source`` into ``out``; the wheel's path."""
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip("wheel", *isolation, "--no-deps", "-w", str(out), str(source))
    [wheel] = out.glob("*.whl")
    return wheel


@contextlib.contextmanager
def installed_wheel(wheel: Path, dist: str, package: str) -> Iterator[None]:
    """Install ``wheel`` (no dependencies) for the ``with`` block, for real (its metadata and
    entry points are found as any installed distribution's), but into a directory of its own
    put first on ``sys.path`` and on the ``PYTHONPATH`` that processes started meanwhile
    inherit: other test processes sharing the environment (``pytest -n``) never see it.
    Afterwards the directory leaves both paths and every imported module of ``package`` is
    forgotten, so later tests see none of it."""
    target = wheel.parent / f"{dist}-site"
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    previous = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), previous) if p)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(target))
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
        importlib.invalidate_caches()
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def read_json(path: Path) -> Any:
    """The JSON document in ``path``, or None while the file does not exist (for files their
    writer replaces atomically, such as a debug or status file: wait for it with
    :func:`wait_for`)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The source of ``LineService``, a service serving a protocol of its own (``AppServiceBase``
#: with ``bind()`` and ``serve(listener)``): each connection gets one line, ``hello``. It
#: starts with blank lines and imports ``socket`` as ``_socket``, so that it may be appended to
#: another services module as well as written as one.
LINE_SERVICE_PY = textwrap.dedent('''

    import socket as _socket

    from appd import AppServiceBase, quit_requested


    class LineService(AppServiceBase):
        """Answers each connection with one line: a protocol of its own, not appd's."""

        port = 0
        setting_names = AppServiceBase.setting_names | {"port"}

        def bind(self):
            return _socket.create_server(("127.0.0.1", self.port))

        def serve(self, listener):
            listener.settimeout(0.1)
            while not quit_requested():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    conn.sendall(b"hello\\n")
''')
