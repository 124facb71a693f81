"""On a terminal a multi-line error is printed as its lines, not as one line of escapes."""

from __future__ import annotations

import io

from appd.logging import configure_logging, get_logger

ERROR = 'Traceback (most recent call last):\n  File "services.py", line 3\nSyntaxError: bad'


def test_a_multi_line_value_is_printed_as_lines_on_the_console() -> None:
    out = io.StringIO()
    configure_logging("test", stream=out, renderer="console")
    try:
        get_logger("appd.test").error("reload failed", error=ERROR, attempt=2)
    finally:
        configure_logging("test", stream=io.StringIO(), renderer="json")
    lines = out.getvalue().splitlines()
    assert "reload failed" in lines[0] and "attempt=2" in lines[0]
    assert "\\n" not in out.getvalue()
    assert lines[1:] == ["error:", *ERROR.splitlines()]


def test_json_keeps_the_value_whole() -> None:
    out = io.StringIO()
    configure_logging("test", stream=out, renderer="json")
    get_logger("appd.test").error("reload failed", error=ERROR)
    assert len(out.getvalue().splitlines()) == 1
    assert "\\n" in out.getvalue()
