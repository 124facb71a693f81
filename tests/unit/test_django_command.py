"""The argument hand-over of ``manage.py appd`` (no Django project needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("django")

from appd.contrib.django.management.commands.appd import appd_arguments


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], ["status"]),
        (["--settings", "site.settings", "status", "--json"], ["status", "--json"]),
        (["call", "power", "poweron", "3", "--pythonpath=."], ["call", "power", "poweron", "3"]),
        (["--config", "appd.toml", "list", "--settings=x"], ["--config", "appd.toml", "list"]),
        (["call", "s", "c", "settings=3"], ["call", "s", "c", "settings=3"]),
    ],
)
def test_django_options_are_taken_out_the_rest_goes_to_appd(
    argv: list[str], expected: list[str]
) -> None:
    assert appd_arguments(argv) == expected


def test_a_failing_command_is_a_command_error_naming_the_arguments_it_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.core.management.base import CommandError

    from appd.contrib.django.management.commands import appd as command

    ran: list[list[str]] = []

    def fake_run_appd(argv: list[str]) -> int:
        ran.append(list(argv))
        return 3

    monkeypatch.setattr(command, "run_appd", fake_run_appd)
    with pytest.raises(CommandError, match=r"^appd status --json exited with 3$") as info:
        command.Command().handle("status", appd_args=["--json"])
    assert ran == [["status", "--json"]]
    assert info.value.returncode == 3
