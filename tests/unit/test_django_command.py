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
