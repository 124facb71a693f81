import io
import json
import os
import subprocess
import sys

from appd.logging import configure_logging, get_logger


def test_json_lines_carry_role_and_pid_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging("guardian", stream=out)
    get_logger("appd.test").info("hello", answer=42)
    record = json.loads(out.getvalue().strip().splitlines()[-1])
    assert record["event"] == "hello"
    assert record["answer"] == 42
    assert record["role"] == "guardian"
    assert record["pid"] == os.getpid()
    configure_logging("main", stream=io.StringIO())


def test_reconfiguring_replaces_the_handler_instead_of_stacking() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("a", stream=first)
    configure_logging("b", stream=second)
    get_logger("appd.test").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().strip().splitlines()) == 1
    configure_logging("main", stream=io.StringIO())


def test_unconfigured_appd_prints_nothing_on_stdout_and_defers_to_stdlib_logging() -> None:
    code = (
        "from appd import get_logger, load_hooks\n"
        "load_hooks()\n"
        "log = get_logger('appd.test')\n"
        "log.debug('a debug record'); log.info('an info record'); log.warning('a warning', n=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert "a warning" in done.stderr
    assert "debug record" not in done.stderr and "info record" not in done.stderr
