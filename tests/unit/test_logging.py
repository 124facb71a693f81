import io
import json
import os

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
