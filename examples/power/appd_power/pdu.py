"""The simulated PDU: a small TCP device with 8 outlets that takes at most 5 connections.

It speaks a line protocol (ASCII, one command per ``\\n``-terminated line, replies likewise; the
full grammar is in the example's README.md).  On connect it greets with ``HELLO PDU 8``; once
5 sessions are open it answers a further connection with ``ERR busy`` and closes it.  It counts
its peak of simultaneous sessions, which ``PEAK`` reports and ``PEAK RESET`` resets, so a test
or the load demo can show that the power service never exceeded the limit.

:class:`PduState` is the device without I/O (outlets, counters, one reply per line);
:class:`PduDevice` serves it on a listening socket, a thread per session; :class:`PduService`
runs it as an appd service named ``pdu``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from appd import AppServiceBase, ConfigurationError, get_logger, quit_requested
from appd_power.errors import InvalidOutlet
from appd_power.outlets import OUTLETS, check_outlet

__all__ = ["MAX_CONNECTIONS", "MAX_LINE", "PduDevice", "PduService", "PduState", "greeting"]

#: Sessions the device serves at once; one more is refused with ``ERR busy``.
MAX_CONNECTIONS: Final = 5
#: Longest accepted command line, in bytes; a longer one is answered ``ERR line too long``
#: and the session closed.
MAX_LINE: Final = 256
#: How often blocked sockets look at the stop flag, in seconds.
POLL_SECONDS: Final = 0.1

log = get_logger("appd_power.pdu")


def greeting(outlets: int) -> str:
    """The line the device sends first on every admitted session."""
    return f"HELLO PDU {outlets}"


class PduState:
    """The device without its sockets: outlet states, session counters, and the command
    interpreter.  Thread-safe: every session's thread shares one instance."""

    def __init__(self, outlets: int = OUTLETS, max_connections: int = MAX_CONNECTIONS) -> None:
        for setting, value in (("outlets", outlets), ("max_connections", max_connections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"pdu: {setting} must be an integer >= 1, not {value!r}")
        self.outlets = outlets
        self.max_connections = max_connections
        self._on = [False] * outlets
        self._lock = threading.Lock()
        #: Sessions open now.
        self.connections = 0
        #: Most sessions open at once since start (or since the last ``PEAK RESET``).
        self.peak = 0
        #: Connections refused with ``ERR busy``.
        self.refused = 0

    def admit(self) -> bool:
        """Count a new session in, unless ``max_connections`` are open (then count a refusal)."""
        with self._lock:
            if self.connections >= self.max_connections:
                self.refused += 1
                return False
            self.connections += 1
            self.peak = max(self.peak, self.connections)
            return True

    def leave(self) -> None:
        """Count a session out (before its socket closes, so its client may reconnect at once)."""
        with self._lock:
            self.connections -= 1

    def answer(self, line: str) -> tuple[str | None, bool]:
        """The reply to one command line (None for a blank line) and whether to close after it."""
        words = line.split()
        if not words:
            return None, False
        cmd, rest = words[0].upper(), words[1:]
        if cmd in ("ON", "OFF"):
            if len(rest) != 1:
                return f"ERR usage: {cmd} <outlet>", False
            return self._switch(rest[0], cmd == "ON"), False
        if cmd == "STATUS":
            return self._status(rest), False
        if cmd == "PEAK":
            return self._peak(rest), False
        if cmd == "STATS" and not rest:
            with self._lock:
                return (
                    f"OK CONNECTIONS {self.connections} PEAK {self.peak} REFUSED {self.refused}",
                    False,
                )
        if cmd == "QUIT" and not rest:
            return "OK BYE", True
        return f"ERR unknown command {words[0][:32]}", False

    def _outlet(self, text: str) -> int | str:
        try:
            return check_outlet(text, self.outlets)
        except InvalidOutlet:
            return f"ERR bad outlet {text[:16]}: must be 1..{self.outlets}"

    def _switch(self, text: str, on: bool) -> str:
        outlet = self._outlet(text)
        if isinstance(outlet, str):
            return outlet
        with self._lock:
            self._on[outlet - 1] = on
        return f"OK {outlet} {'ON' if on else 'OFF'}"

    def _status(self, rest: list[str]) -> str:
        if not rest:
            with self._lock:
                return "OK " + " ".join("ON" if on else "OFF" for on in self._on)
        if len(rest) != 1:
            return "ERR usage: STATUS [<outlet>]"
        outlet = self._outlet(rest[0])
        if isinstance(outlet, str):
            return outlet
        with self._lock:
            return f"OK {outlet} {'ON' if self._on[outlet - 1] else 'OFF'}"

    def _peak(self, rest: list[str]) -> str:
        if [word.upper() for word in rest] == ["RESET"]:
            with self._lock:
                self.peak = self.connections
                return f"OK PEAK {self.peak}"
        if rest:
            return "ERR usage: PEAK [RESET]"
        with self._lock:
            return f"OK PEAK {self.peak}"


class PduDevice:
    """Serves a :class:`PduState` on a listening socket: one thread per admitted session.

    :param command_delay: seconds each outlet command takes (a real PDU is slow; this makes
        sessions overlap under load as they would against hardware).
    :param idle_timeout: seconds a session may stay silent before the device answers
        ``ERR idle timeout`` and closes it (None: never), as real PDUs drop idle sessions.
    """

    def __init__(
        self,
        state: PduState,
        *,
        command_delay: float = 0.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.state = state
        self.command_delay = float(command_delay)
        self.idle_timeout = idle_timeout
        self._stopping = False

    def serve(self, listener: socket.socket, should_stop: Callable[[], bool]) -> None:
        """Accept and serve sessions until ``should_stop()``; then close every session."""
        listener.settimeout(POLL_SECONDS)
        threads: list[threading.Thread] = []
        self._stopping = False
        try:
            while not should_stop():
                try:
                    sock, _peer = listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:  # EMFILE and friends: keep serving the sessions we have
                    log.warning("pdu accept failed", error=str(exc))
                    time.sleep(POLL_SECONDS)
                    continue
                if not self.state.admit():
                    _refuse(sock)
                    continue
                thread = threading.Thread(
                    target=self._session, args=(sock, should_stop), daemon=True
                )
                thread.start()
                threads = [t for t in threads if t.is_alive()] + [thread]
        finally:
            self._stopping = True
            for thread in threads:
                thread.join(timeout=5)

    def _session(self, sock: socket.socket, should_stop: Callable[[], bool]) -> None:
        try:
            sock.settimeout(POLL_SECONDS)
            sock.sendall(f"{greeting(self.state.outlets)}\n".encode())
            self._converse(sock, should_stop)
        except OSError:
            pass  # the peer went away: the session simply ends
        finally:
            self.state.leave()
            with contextlib.suppress(OSError):
                sock.close()

    def _converse(self, sock: socket.socket, should_stop: Callable[[], bool]) -> None:
        buffer = b""
        last_heard = time.monotonic()
        while not (self._stopping or should_stop()):
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_LINE:
                    sock.sendall(b"ERR line too long\n")
                    return
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    idle = time.monotonic() - last_heard
                    if self.idle_timeout is not None and idle > self.idle_timeout:
                        sock.sendall(b"ERR idle timeout\n")
                        return
                    continue
                if not data:
                    return
                buffer += data
                continue
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            last_heard = time.monotonic()
            if len(line) > MAX_LINE:
                sock.sendall(b"ERR line too long\n")
                return
            reply, close = self.state.answer(line.decode("ascii", "replace"))
            if reply is not None:
                if self.command_delay and reply.startswith("OK"):
                    time.sleep(self.command_delay)
                sock.sendall(f"{reply}\n".encode())
            if close:
                return


def _refuse(sock: socket.socket) -> None:
    """Tell a connection over the limit that the device is busy, and close it."""
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.sendall(b"ERR busy\n")
    with contextlib.suppress(OSError):
        sock.close()


class PduService(AppServiceBase):
    """The simulated PDU as an appd service (``pdu``): serves the device until quit."""

    setting_names = AppServiceBase.setting_names | {
        "host", "port", "outlets", "max_connections", "command_delay", "idle_timeout",
    }

    #: Interface the device listens on.
    host: str = "127.0.0.1"
    #: TCP port the device listens on (0 picks a free one).
    port: int = 9100
    #: Number of outlets.
    outlets: int = OUTLETS
    #: Sessions served at once; one more is refused with ``ERR busy``.
    max_connections: int = MAX_CONNECTIONS
    #: Seconds each outlet command takes, as on a real, slow device.
    command_delay: float = 0.005
    #: Seconds of silence after which the device closes a session (None: never).
    idle_timeout: float | None = 300.0

    def __init__(self) -> None:
        self.state: PduState | None = None

    def bind(self) -> socket.socket:
        """A listening socket on ``host:port``; a clear error when the address is taken."""
        try:
            return socket.create_server((self.host, self.port), backlog=64)
        except OSError as exc:
            raise OSError(
                exc.errno, f"pdu cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None

    def setup(self) -> None:
        """Fresh outlets (all off) and counters."""
        self.state = PduState(self.outlets, self.max_connections)

    def serve(self, listener: socket.socket | None = None) -> None:
        """Serve the device until quit is requested.  Binds first when no ``listener`` is given
        (and closes it on return; a given listener is left to its owner)."""
        if self.state is None:
            self.setup()
        assert self.state is not None
        sock = self.bind() if listener is None else listener
        host, port = sock.getsockname()[:2]
        log.info("pdu listening", service=self.name, address=f"{host}:{port}")
        device = PduDevice(
            self.state, command_delay=self.command_delay, idle_timeout=self.idle_timeout
        )
        try:
            device.serve(sock, quit_requested)
        finally:
            if listener is None:
                sock.close()
            log.info("pdu stopped", service=self.name, peak=self.state.peak)

    def run(self) -> None:
        """Serve the device until quit is requested."""
        self.serve()
