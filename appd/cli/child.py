"""The entry of a service process: ``python -m appd.cli.child SPEC``.

The supervisor starts every service process by executing this module in a fresh interpreter,
so a process runs the code, the configuration and the plugins as they are on disk *now*: that
is what makes a reload (SIGHUP) deploy new code.  ``SPEC`` is one JSON object: where the
configuration comes from (``config``: a file, or ``source``: a ``"module:function"`` returning
a :class:`~appd.cli.app.ConfigSource`), the supervisor's ``sys_path``, and the process's place
(``service``, ``worker``, scoreboard ``slot`` and ``group``, and the inherited descriptors
``scoreboard_fd`` and ``listener_fd``).  Not meant to be run by hand.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from appd.logging import configure_logging, get_logger, set_log_fields

__all__ = ["main"]

#: Exit code of a service process whose service is no longer configured.
EXIT_NO_SUCH_SERVICE = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Load, find the one service, serve it until SIGTERM; the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    spec: dict[str, Any] = json.loads(args[0])
    sys.path[:] = [str(p) for p in spec["sys_path"]]
    name, worker = str(spec["service"]), int(spec["worker"])
    role = f"{name}[{worker}]"

    from appd.runtime.logfile import install_reopen_handler
    from appd.runtime.signals import install_quit_handlers

    install_quit_handlers()
    install_reopen_handler()
    # A hang-up is the supervisor's business (a reload), never a reason for a service to die.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    set_log_fields(service=name, worker=worker)
    configure_logging(role)
    log = get_logger("appd.supervisor")
    try:
        return _serve(spec, name, worker)
    except SystemExit:
        raise
    except BaseException as exc:
        log.error(
            "service process failed", error=f"{type(exc).__name__}: {exc}", exc_info=True
        )
        return 1


def _serve(spec: dict[str, Any], name: str, worker: int) -> int:
    from appd.cli.app import ConfigSource, discover, load, prepare_services
    from appd.runtime.entry import load_entry
    from appd.supervisor.child import ProcessBoard, configure_process_logging, serve_process
    from appd.supervisor.scoreboard import Scoreboard, SlotState

    board = Scoreboard.attach(int(spec["scoreboard_fd"]))
    slot = int(spec["slot"])
    board.set_state(slot, SlotState.STARTING)
    source = load_entry(spec["source"])() if spec.get("source") else None
    if source is not None and not isinstance(source, ConfigSource):
        raise TypeError(f"{spec['source']} did not return a ConfigSource")
    config, hooks = load(spec.get("config"), source=source)
    configure_process_logging(config, name, worker)
    found = [s for s in prepare_services(config, discover(config, hooks)) if s.name == name]
    if not found:
        get_logger("appd.supervisor").error(
            "service no longer configured; this process exits", service=name
        )
        return EXIT_NO_SUCH_SERVICE
    fd = spec.get("listener_fd")
    listener = socket.socket(fileno=int(fd)) if fd is not None else None
    serve_process(
        found[0],
        hooks,
        worker=worker,
        board=ProcessBoard(board, slot, int(spec["group"])),
        listener=listener,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
