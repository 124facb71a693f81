#!/usr/bin/env python3
"""A daemon whose executor runs three workers, each restarted if it crashes.

Run it from this directory (``python3 test2.py``); stop it with ``kill $(cat .data/test2.pid)``.
The workers' pid files, logs and output, and ``debug.json`` (every worker's state), are in
``.data/``.
"""

import logging
import os
from datetime import timedelta

from appd import (
    DaemonRunStatus,
    WorkerStartInfo,
    quit_requested,
    sleep,
    start_daemon,
    start_workers,
)


def log_config(filename: str) -> dict:
    """A dictConfig that sends every record to ``.data/<filename>``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "standard": {
                "format": "%(asctime)s - %(process)d - %(name)s - %(levelname)s - %(message)s"
            }
        },
        "handlers": {
            "fileHandler": {
                "class": "logging.handlers.TimedRotatingFileHandler",
                "level": "DEBUG",
                "formatter": "standard",
                "filename": f".data/{filename}",
                "interval": 1,
                "when": "midnight",
            }
        },
        "root": {"handlers": ["fileHandler"], "level": "DEBUG"},
    }


logger = logging.getLogger(__name__)

COLORS = {1: "red", 2: "yellow", 3: "green"}


def daemon_main(*, foo: int, bar: int) -> None:
    """The executor: supervise three workers until the daemon is asked to quit."""
    logger.debug(f"foo={foo}, bar={bar}")
    start_workers(
        [
            WorkerStartInfo(
                pid_filename=f".data/worker-{i}.pid",
                entry="test2:worker",
                name=f"worker-{i}",
                logging_config=log_config(f"worker-{i}.log"),
                args={"color": color},
                stdout_filename=f".data/worker-{i}-out.txt",
                stderr_filename=f".data/worker-{i}-err.txt",
            )
            for i, color in COLORS.items()
        ],
        debug_filename=".data/debug.json",
        check_interval=timedelta(seconds=1),
        restart_interval=timedelta(seconds=2),
    )


def worker(*, color: str) -> None:
    """One worker: log now and then until quit is requested."""
    logger.debug(f"color={color}")
    while not quit_requested():
        logger.info("worker is running")
        print(f"{color} worker is running", flush=True)
        sleep(5)


def main() -> None:
    os.makedirs(".data", exist_ok=True)
    status, pid = start_daemon(
        pid_filename=".data/test2.pid",
        stdout_filename=".data/out.txt",
        stderr_filename=".data/err.txt",
        daemon_entry="test2:daemon_main",
        logging_config=log_config("test2.log"),
        daemon_args=dict(foo=1, bar=2),
        restart_interval=timedelta(seconds=10),
    )
    if status == DaemonRunStatus.LAUNCHED:
        print(f"Daemon launched, pid = {pid}")
    else:
        print(f"Unable to launch daemon, status={status}, extra={pid}")


if __name__ == "__main__":
    main()
