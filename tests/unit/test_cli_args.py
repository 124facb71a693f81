import pytest

from appd.cli import EXIT_USAGE, build_parser, main, parse_call_arguments


def test_call_arguments_are_json_where_they_parse_else_strings() -> None:
    assert parse_call_arguments(["3", "hello", "[1, 2]", '"3"', "true"]) == (
        [3, "hello", [1, 2], "3", True],
        {},
    )


def test_key_value_words_become_keyword_arguments() -> None:
    assert parse_call_arguments(["3", "on=true", "name=bob", "a=b=c"]) == (
        [3],
        {"on": True, "name": "bob", "a": "b=c"},
    )


def test_words_with_equals_but_no_identifier_stay_positional() -> None:
    assert parse_call_arguments(["x y=1", "=3"]) == (["x y=1", "=3"], {})


def test_no_command_prints_help_and_exits_with_usage_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().out


def test_every_documented_command_has_help() -> None:
    parser = build_parser()
    for command in (
        "run", "start", "stop", "restart", "status", "call", "list", "plugins", "check", "keygen"
    ):
        with pytest.raises(SystemExit) as info:
            parser.parse_args([command, "--help"])
        assert info.value.code == 0


def test_keygen_prints_a_fresh_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen"]) == 0
    second = capsys.readouterr().out.strip()
    assert first != second
    assert len(first) >= 32
