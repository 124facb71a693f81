"""What a service process does, from the moment it knows its service until it exits.

A process a reload starts is a fresh interpreter (``python -m appd.cli.child``, ``exec``ed by
the supervisor), which loads the configuration, the plugins and the service code as they are on
disk now and then calls :func:`serve_process` here; the first processes and a restart after a
crash are forks of the supervisor, which call it at once.  The process reports through its
scoreboard slot: its state, the requests it answered, a heartbeat from its serving loop several
times a second, and its open connections, which its siblings read to share the load evenly.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from appd.config import AppdConfig
from appd.hooks import Hooks
from appd.logging import StdioRecords, configure_logging, get_logger, set_log_fields
from appd.runtime import quit_requested
from appd.runtime.logfile import write_log_to
from appd.service import AppServiceBase, SecureSocketAppService
from appd.supervisor.scoreboard import Scoreboard, SlotState

__all__ = [
    "HEARTBEAT_SECONDS",
    "ProcessBoard",
    "configure_process_logging",
    "finish_process_output",
    "serve_process",
]

#: How often a service process without a serving loop of its own (``run()``) beats.
HEARTBEAT_SECONDS = 0.5

_log = get_logger("appd.supervisor")


def configure_process_logging(config: AppdConfig, service: str | None, worker: int | None) -> None:
    """Log in the configured format and level to standard error (the supervisor's own output),
    every record carrying ``service`` and ``worker`` when given (a service process)."""
    role = "supervisor"
    if service is not None:
        set_log_fields(service=service, worker=worker)
        role = f"{service}[{worker}]"
    renderer: Any = None if config.log_format == "auto" else config.log_format
    stream = None
    if service is not None:
        # What the service prints becomes records too, with the same fields.
        stream = _STDIO.start()
        # Descriptors 1 and 2 are now the captured output's pipes: a reopened log file
        # replaces the handler's own descriptor instead.
        write_log_to(stream.fileno())
    configure_logging(role, renderer=renderer, level=config.log_level.upper(), stream=stream)


#: The service process's captured standard output and error (see :func:`finish_process_output`).
_STDIO = StdioRecords()


def finish_process_output() -> None:
    """At the end of a service process: the last lines it printed are logged."""
    _STDIO.stop()


class ProcessBoard:
    """This process's scoreboard slot, as its server sees it: the request counter, the
    heartbeat and the even-load gate.

    A process accepts another connection only while it holds fewer than its fair share plus
    one: ``ceil(connections / processes) + 1``, counted over the service's ready processes.  So
    with ``processes = N`` no process holds more than its share plus one while another has
    room, whichever process the kernel wakes first.
    """

    def __init__(self, board: Scoreboard, slot: int, group: int) -> None:
        self.board = board
        self.slot = slot
        self.group = group
        self._requests = 0
        self._lock = threading.Lock()
        #: Called on the first beat of the serving loop (then forgotten): the process says it
        #: is ready only once it accepts, so a reload never stops the old one too early.
        self.on_first_beat: Callable[[], None] | None = None

    def count(self) -> None:
        """One more request answered."""
        with self._lock:
            self._requests += 1
            self.board.set_requests(self.slot, self._requests)

    @property
    def value(self) -> int:
        """Requests answered so far by this process."""
        return self._requests

    def beat(self) -> None:
        """The serving loop turned: this process is alive."""
        self.board.beat(self.slot)
        if self.on_first_beat is not None:
            ready, self.on_first_beat = self.on_first_beat, None
            ready()

    def may_accept(self, connections: int) -> bool:
        """Publish ``connections`` and say whether to take another one."""
        self.board.set_connections(self.slot, connections)
        processes, total = self.board.group_load(self.group)
        if processes <= 1:
            return True
        return connections < -(-total // processes) + 1


def serve_process(
    service: AppServiceBase,
    hooks: Hooks,
    *,
    worker: int,
    board: ProcessBoard,
    listener: socket.socket | None,
) -> None:
    """Run one service process: ``appd_post_fork``, ``setup()``, ready, serve until quit,
    ``teardown()``.  The caller has set up logging and signal handling."""
    slots = board.board
    _set_process_title(f"appd: {service.name}[{worker}]")
    slots.set_state(board.slot, SlotState.STARTING)
    board.beat()
    hooks.appd_post_fork(service=service, worker=worker)
    service.setup()
    try:

        def ready() -> None:
            slots.set_state(board.slot, SlotState.READY)
            hooks.appd_service_ready(service=service, worker=worker)

        serve: Callable[..., None] | None = getattr(service, "serve", None)
        if isinstance(service, SecureSocketAppService) and listener is not None:
            # Ready once its accept loop turns: deriving its keys (scrypt) and building its
            # server come first, and a reload stops the old process only after this one is
            # ready, so no connection waits in the backlog meanwhile.
            board.on_first_beat = ready
            service.serve(listener, hooks=hooks, counter=board, gate=board)
        elif serve is not None and listener is not None:
            # A service of its own kind that serves a listener itself: appd cannot see into its
            # loop, so a thread beside it proves the process alive (a frozen process beats no
            # more; a stuck loop only the service itself can tell).
            ready()
            _run_with_heartbeat(lambda: serve(listener), board)
        else:
            ready()
            _run_with_heartbeat(service.run, board)
    finally:
        slots.set_state(board.slot, SlotState.STOPPING)
        try:
            service.teardown()
        finally:
            try:
                if quit_requested():
                    hooks.appd_quit(reason="signal")
            finally:
                finish_process_output()


def _run_with_heartbeat(body: Callable[[], object], board: ProcessBoard) -> None:
    """``body()`` (``service.run()``, or a service's own ``serve(listener)``) with a thread
    beating beside it: appd's own server beats from its accept loop, other serving code
    cannot."""
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            board.beat()
            done.wait(HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="appd-heartbeat", daemon=True)
    thread.start()
    try:
        body()
    finally:
        done.set()


def _set_process_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
