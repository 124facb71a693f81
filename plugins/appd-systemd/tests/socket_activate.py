"""Pass listening sockets the way systemd does, then exec a command (what
``systemd-socket-activate`` does, for machines without it).

    python socket_activate.py FD[,FD...] NAME[:NAME...] -- COMMAND...

The descriptors become 3, 4, ...; ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (this
process, which the command replaces) are set.
"""

from __future__ import annotations

import fcntl
import os
import sys


def main(argv: list[str]) -> None:
    fds = [int(fd) for fd in argv[0].split(",")]
    names = argv[1]
    command = argv[argv.index("--") + 1 :]
    # Move every descriptor out of the way first: a source may be a target of another.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
    for index, fd in enumerate(moved):
        os.dup2(fd, 3 + index, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    if names:
        os.environ["LISTEN_FDNAMES"] = names
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
