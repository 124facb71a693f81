"""What the server's thread design costs per request, measured before choosing it.

Compares running a trivial handler inline in the thread that read the request (appd's design)
with handing it to a handler thread and back (the classic I/O thread + worker pool design).
Run: ``python bench/handoff.py``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any


def handler(value: Any) -> Any:
    return value


def inline(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        handler(i)
    return (time.perf_counter() - start) / n


def handoff(n: int) -> float:
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def worker() -> None:
        while (item := requests.get()) is not None:
            replies.put(handler(item))

    thread = threading.Thread(target=worker)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        requests.put(i)
        replies.get()
    elapsed = time.perf_counter() - start
    requests.put(None)
    thread.join()
    return elapsed / n


def main() -> None:
    n = 20000
    print(f"inline call:               {inline(n) * 1e6:8.2f} µs per request")
    print(f"hand-off to a thread, back: {handoff(n) * 1e6:8.2f} µs per request")


if __name__ == "__main__":
    main()
