"""What the stress suites measure in a service process (from /proc), and the flooder process."""

from __future__ import annotations

import collections
import socket
import sys
import time
from pathlib import Path

from appd.transport.protocol import MAGIC, VERSION, encode_frame


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB."""
    return _status_field(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The highest resident memory ``pid`` ever had, in KiB."""
    return _status_field(pid, "VmHWM")


def threads(pid: int) -> int:
    """Threads of ``pid``."""
    return _status_field(pid, "Threads")


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(address: str, seconds: float, mode: str, keep: int = 2000) -> int:
    """Open connections to ``address`` (``host:port``, or a Unix socket path) as fast as one
    process can for ``seconds``: silent ones (``connect``), or ones that send a client hello and
    nothing else (``hello``).  Keeps the newest ``keep`` open, closing the oldest.  Returns how
    many it opened."""
    hello = encode_frame(MAGIC + bytes([VERSION]) + bytes(32))
    if address.startswith("/"):
        family, target = socket.AF_UNIX, address
    else:
        host, port = address.rsplit(":", 1)
        family, target = socket.AF_INET, (host, int(port))  # type: ignore[assignment]
    opened: collections.deque[socket.socket] = collections.deque()
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if mode == "hello" and family == socket.AF_INET:
                sock.settimeout(1.0)  # connected (at once, on loopback) so the hello goes out
                sock.connect(target)
                sock.send(hello)
            else:
                sock.setblocking(False)  # a Unix connect completes (or fails) at once
                sock.connect(target)
                if mode == "hello":
                    sock.send(hello)
        except BlockingIOError:
            if family == socket.AF_UNIX:  # the accept queue is full: not opened
                sock.close()
                continue
        except OSError:
            sock.close()
            continue
        opened.append(sock)
        count += 1
        if len(opened) > keep:
            opened.popleft().close()
    for sock in opened:
        sock.close()
    return count


if __name__ == "__main__":  # python measure.py ADDRESS SECONDS MODE
    print(flood(sys.argv[1], float(sys.argv[2]), sys.argv[3]), flush=True)
