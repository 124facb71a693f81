"""``manage.py appd``'s parser and error handling (no Django project needed)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

pytest.importorskip("django")

from django.core.management.base import CommandError

from appd.contrib.django.management.commands.appd import Command
from appd.errors import RemoteError


def parse(argv: list[str]) -> tuple[Command, dict[str, Any]]:
    command = Command()
    options = vars(command.create_parser("manage.py", "appd").parse_args(argv))
    return command, options


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], {"command": "status", "verbosity": 1, "json": False}),
        (["status", "-v", "2", "--json"], {"command": "status", "verbosity": 2, "json": True}),
        (["-v", "3", "status", "--no-color"], {"verbosity": 3, "no_color": True}),
        (["list", "--traceback", "--settings", "site.settings"],
         {"command": "list", "traceback": True, "settings": "site.settings"}),
        (["call", "power", "poweron", "3", "--pythonpath=."],
         {"service": "power", "cmd": "poweron", "args": ["3"], "pythonpath": "."}),
        (["--config", "appd.toml", "list"], {"config": "appd.toml", "command": "list"}),
        (["call", "s", "c", "settings=3"], {"args": ["settings=3"], "settings": None}),
        (["run", "--reload"], {"command": "run", "reload": True}),
    ],
)
def test_every_subcommand_takes_djangos_standard_options(
    argv: list[str], expected: dict[str, Any]
) -> None:
    _, options = parse(argv)
    assert {key: options.get(key) for key in expected} == expected


def test_the_help_speaks_of_settings_appd() -> None:
    help_text = Command().create_parser("manage.py", "appd").format_help()
    assert "settings.APPD" in help_text
    assert "appd.toml" not in help_text.replace("--config", "")
    for name in ("run", "start", "stop", "restart", "status", "call", "list", "check"):
        assert name in help_text


def test_a_non_zero_exit_is_a_command_error_naming_what_ran() -> None:
    command, options = parse(["status", "--json"])
    options["handler"] = lambda args: 3
    with pytest.raises(CommandError, match=r"^appd status --json exited with 3$") as info:
        command.handle(**options)
    assert info.value.returncode == 3


def test_a_failure_is_a_command_error_carrying_the_error_text() -> None:
    command, options = parse(["call", "device", "boom", "1"])

    def fail(args: argparse.Namespace) -> int:
        assert (args.service, args.cmd, args.args) == ("device", "boom", ["1"])
        raise RemoteError("ValueError", "the device said no")

    options["handler"] = fail
    with pytest.raises(CommandError) as info:
        command.handle(**options)
    assert str(info.value) == "appd call device boom 1: remote ValueError: the device said no"
    assert info.value.returncode == 1
    assert isinstance(info.value.__cause__, RemoteError)


def test_traceback_lets_the_error_itself_through() -> None:
    command, options = parse(["call", "device", "boom", "--traceback"])

    def fail(args: argparse.Namespace) -> int:
        raise RemoteError("ValueError", "the device said no")

    options["handler"] = fail
    with pytest.raises(RemoteError):
        command.handle(**options)
