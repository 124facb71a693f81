"""One asyncio event loop in a background thread, for ``async def`` handlers.

Handlers of one service share the loop, so async resources they keep (sessions, pools) stay
bound to a single loop from request to request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable
from typing import TypeVar

from appd.errors import RequestTimeout

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Starts its loop lazily on the first :meth:`run`; :meth:`stop` ends it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="appd-async-handlers", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, awaitable: Awaitable[T], timeout: float | None) -> T:
        """Run ``awaitable`` on the loop and wait for it; cancel it and raise
        :class:`RequestTimeout` after ``timeout`` seconds."""
        loop = self._ensure()

        async def _await() -> T:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(_await(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout(f"async handler ran past request_timeout ({timeout} s)") from None

    def stop(self) -> None:
        """Stop the loop and its thread (tasks still pending are dropped)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()

    def __repr__(self) -> str:
        return f"<LoopThread running={self._loop is not None}>"


