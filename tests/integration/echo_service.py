"""A service for the transport tests, run as its own process.

Usage: ``python echo_service.py ADDRESS_FILE SETTINGS_JSON``.  It binds (port 0 unless the
settings say otherwise), writes its port or path to ADDRESS_FILE, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import appd
from appd import SecureSocketAppService, command, configure_logging, get_logger
from appd.capacity import Capacity
from appd.config import CapacityConfig
from appd.runtime.quit import request_quit

KEY = "0123456789abcdef-test-key"


class EchoService(SecureSocketAppService):
    host = "127.0.0.1"
    port = 0
    key = KEY
    users = {"alice": "alice-pw", "bob": "bob-pw"}

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0
        self._capacities: dict[str, Capacity] = {}

    @command
    def echo(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if len(args) == 1 and not kwargs else [list(args), kwargs]

    @command
    def count(self) -> int:
        self.hits += 1
        return self.hits

    @command("hits")
    def get_hits(self) -> int:
        return self.hits

    @command
    def boom(self, message: str) -> None:
        raise ValueError(message)

    @command
    def exit(self, code: int) -> None:
        raise SystemExit(code)

    @command
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @command
    def unserializable(self) -> object:
        return object()

    @command
    def whoami(self) -> str:
        return "unknown"

    @command
    def device(self, ledger: str, tag: str, seconds: float) -> str:
        """Holds "the device" for ``seconds``; first appends ``tag start`` (monotonic) to
        ``ledger``, so a test can compare when each handler started with its caller's deadline."""
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{tag} {time.monotonic():.6f}\n".encode())
        finally:
            os.close(fd)
        time.sleep(seconds)
        return tag

    @command
    def scope(self) -> list[Any]:
        """What a handler sees of its call: time left, request id (module level and on the
        request are checked to agree by ``request_scope``)."""
        return [appd.time_remaining(), appd.current_request_id()]

    @command
    def log_request(self, message: str) -> None:
        get_logger("echo").warning(message)
        logging.getLogger("echo.stdlib").warning(message + " (stdlib)")

    @command
    def leased(self, directory: str, seconds: float) -> str:
        """Waits for the one slot of a local capacity in ``directory`` (acquire_timeout 10 s),
        then holds it ``seconds``."""
        capacity = self._capacities.get(directory)
        if capacity is None:
            capacity = Capacity(CapacityConfig(name="dev", limit=1, directory=Path(directory),
                                               acquire_timeout=10.0))
            self._capacities[directory] = capacity
        with capacity.acquire():
            time.sleep(seconds)
        return "done"

    @command
    def relay(self, port: int) -> Any:
        """Acts (counts a hit), then calls another service (this one, at ``port``) when no time
        is left for it: that call's ``DeadlineExceeded`` escapes the handler."""
        self.hits += 1
        client = appd.SecureSocketAppClient("127.0.0.1", port, "alice", "alice-pw", KEY)
        with client, appd.deadline(0):
            return client.call("echo", 1)

    @command
    async def async_echo(self, value: Any) -> Any:
        await asyncio.sleep(0.01)
        return value

    def process_request(self, request: Any) -> tuple[list[Any], dict[str, Any]]:
        if request.cmd == "whoami":
            return [request.username, request.peer], {}
        if request.cmd == "request_scope":
            assert request.request_id == appd.current_request_id()
            return [request.time_remaining(), request.request_id], {}
        return super().process_request(request)


def main() -> None:
    address_file = Path(sys.argv[1])
    settings = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    configure_logging("echo", renderer="json")
    signal.signal(signal.SIGTERM, lambda *_: request_quit())
    service = EchoService()
    service.apply_settings(settings)
    listener = service.bind()
    name = listener.getsockname()
    tmp = address_file.with_suffix(".tmp")
    tmp.write_text(name if isinstance(name, str) else str(name[1]))
    tmp.rename(address_file)
    service.serve(listener)
    listener.close()


if __name__ == "__main__":
    main()
