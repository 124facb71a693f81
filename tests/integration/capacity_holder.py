"""A process that uses a capacity, for the capacity tests (run as a script).

    python capacity_holder.py CONFIG_JSON hold
        acquire one lease, print ``token N``, hold it until standard input closes (or until
        killed), print ``lost`` if it was lost meanwhile, release it.
    python capacity_holder.py CONFIG_JSON churn COUNT LOG HOLD_SECONDS
        COUNT times: acquire, append ``+ <token> <started ns> <granted ns>`` to LOG (monotonic
        clock: when it began to wait, when it was granted), hold HOLD_SECONDS, append
        ``- <token> <releasing ns>``, release; then print a JSON summary
        ``{"granted": n, "errors": {"CapacityTimeout": n, ...}}``.

CONFIG_JSON holds the ``[capacities.<name>]`` settings plus ``name`` (and ``directory``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from appd.capacity import Capacity
from appd.config import CapacityConfig
from appd.errors import CapacityError


def capacity_from(text: str) -> Capacity:
    data = json.loads(text)
    if "directory" in data:
        data["directory"] = Path(data["directory"])
    return Capacity(CapacityConfig(**data))


def hold(capacity: Capacity) -> None:
    lease = capacity.acquire_lease()
    print(f"token {lease.token}", flush=True)
    sys.stdin.read()
    if lease.lost:
        print("lost", flush=True)
    lease.release()


def churn(capacity: Capacity, count: int, log: str, hold_seconds: float) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    granted = 0
    errors: dict[str, int] = {}
    for _ in range(count):
        started = time.monotonic_ns()
        try:
            lease = capacity.acquire_lease()
        except CapacityError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            time.sleep(0.01)
            continue
        granted += 1
        os.write(fd, f"+ {lease.token} {started} {time.monotonic_ns()}\n".encode())
        time.sleep(hold_seconds)
        os.write(fd, f"- {lease.token} {time.monotonic_ns()}\n".encode())
        lease.release()
    os.close(fd)
    print(json.dumps({"granted": granted, "errors": errors}), flush=True)


def main() -> None:
    capacity = capacity_from(sys.argv[1])
    if sys.argv[2] == "hold":
        hold(capacity)
    else:
        churn(capacity, int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    capacity.close()


if __name__ == "__main__":
    main()
