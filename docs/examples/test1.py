#!/usr/bin/env python3
"""A daemon that logs a line every few seconds until it is asked to quit.

Run it from this directory (``python3 test1.py``); stop it with ``kill $(cat .data/test1.pid)``.
Everything it writes lands in ``.data/``.
"""

import logging
import os
from datetime import timedelta

from appd import DaemonRunStatus, quit_requested, sleep, start_daemon

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "standard": {"format": "%(asctime)s - %(process)d - %(name)s - %(levelname)s - %(message)s"}
    },
    "handlers": {
        "fileHandler": {
            "class": "logging.handlers.TimedRotatingFileHandler",
            "level": "DEBUG",
            "formatter": "standard",
            "filename": ".data/test1.log",
            "interval": 1,
            "when": "midnight",
        }
    },
    "root": {"handlers": ["fileHandler"], "level": "DEBUG"},
}

logger = logging.getLogger(__name__)


def daemon_main(*, foo: int, bar: int) -> None:
    """The daemon's work: loop, sleeping between rounds, until quit is requested."""
    logger.debug(f"foo={foo}, bar={bar}")
    while True:
        logger.debug("I am running")
        print("I am running", flush=True)
        sleep(5)
        if quit_requested():
            break
    logger.debug("quit requested, bye")


def main() -> None:
    os.makedirs(".data", exist_ok=True)
    status, pid = start_daemon(
        pid_filename=".data/test1.pid",
        stdout_filename=".data/out.txt",
        stderr_filename=".data/err.txt",
        daemon_entry="test1:daemon_main",
        logging_config=LOG_CONFIG,
        daemon_args=dict(foo=1, bar=2),
        restart_interval=timedelta(seconds=10),
    )
    if status == DaemonRunStatus.LAUNCHED:
        print(f"Daemon launched, pid = {pid}")
    else:
        print(f"Unable to launch daemon, status={status}, extra={pid}")


if __name__ == "__main__":
    main()
