"""A service for the transport tests, run as its own process.

Usage: ``python echo_service.py ADDRESS_FILE SETTINGS_JSON``.  It binds (port 0 unless the
settings say otherwise), writes its port or path to ADDRESS_FILE, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from appd import SecureSocketAppService, command
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
    async def async_echo(self, value: Any) -> Any:
        await asyncio.sleep(0.01)
        return value

    def process_request(self, request: Any) -> tuple[list[Any], dict[str, Any]]:
        if request.cmd == "whoami":
            return [request.username, request.peer], {}
        return super().process_request(request)


def main() -> None:
    address_file = Path(sys.argv[1])
    settings = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
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
