"""Processes that hold or churn a capacity's leases (see capacity_holder.py), and the peak of
simultaneous holders read from their shared event log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import kill_pids, pid_alive

HOLDER = Path(__file__).with_name("capacity_holder.py")


class Holder:
    """A ``capacity_holder.py`` process; :meth:`close` ends it (SIGKILL if it lingers)."""

    def __init__(self, settings: dict[str, Any], *mode: str) -> None:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER), json.dumps(config), *mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def token(self) -> int:
        """Wait for the ``token N`` line of a holder in ``hold`` mode."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("token "), f"holder {self.pid} said {line!r}"
        return int(line.split()[1])

    def finish(self, timeout: float = 60) -> str:
        """Close its standard input and return the rest of its output once it exited 0."""
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"holder {self.pid} exited {self.proc.returncode}"
        return out

    def close(self) -> None:
        if self.proc.poll() is None and pid_alive(self.pid):
            kill_pids([self.pid])
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def read_churn_log(log: Path) -> dict[int, tuple[int, int, int]]:
    """Each lease of a churn log by token: (started waiting, granted, released), in ns."""
    granted: dict[int, tuple[int, int]] = {}
    released: dict[int, int] = {}
    for line in log.read_text().splitlines():
        fields = line.split()
        if fields[0] == "+":
            token = int(fields[1])
            assert token not in granted, f"token {token} granted twice"
            granted[token] = (int(fields[2]), int(fields[3]))
        else:
            released[int(fields[1])] = int(fields[2])
    assert granted.keys() == released.keys()
    return {token: (*granted[token], released[token]) for token in granted}


def peak_holders(leases: dict[int, tuple[int, int, int]]) -> int:
    """The most leases held at once (a release and a grant at one instant: release first)."""
    events = sorted(
        [(granted, 1) for _s, granted, _r in leases.values()]
        + [(released, -1) for _s, _g, released in leases.values()]
    )
    peak = current = 0
    for _when, change in events:
        current += change
        peak = max(peak, current)
    return peak


def assert_fencing_order(leases: dict[int, tuple[int, int, int]]) -> None:
    """A lease asked for after another was given back has the greater token."""
    by_release = sorted((released, token) for token, (_s, _g, released) in leases.items())
    for token, (started, _granted, _released) in leases.items():
        earlier = [t for released, t in by_release if released < started]
        assert all(t < token for t in earlier), (
            f"token {token} was granted after tokens {[t for t in earlier if t >= token]} "
            "had been released"
        )
