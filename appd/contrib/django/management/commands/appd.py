"""``python manage.py appd COMMAND ...``: the ``appd`` command with the project's settings.

Everything after ``appd`` goes to appd's own command line (``docs/cli.md``), so the commands,
options and exit codes are the same; only the configuration differs: ``settings.APPD`` unless
``--config`` names a file (without either, the usual ``APPD_CONFIG`` / ``appd.toml`` lookup).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final

from django.core.management.base import BaseCommand, CommandError, CommandParser

from appd import cli
from appd.cli.app import config_source, invocation_hooks
from appd.contrib.django.config import django_config_source

__all__ = ["Command", "run_appd"]

#: Django's own options, already applied by ``manage.py`` before the command runs:
#: each is taken out of the arguments rather than passed on to appd.
_DJANGO_OPTIONS_WITH_VALUE: Final = ("--settings", "--pythonpath")


def appd_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` without Django's ``--settings`` / ``--pythonpath`` (both spellings)."""
    words = list(argv)
    kept: list[str] = []
    while words:
        word = words.pop(0)
        if word in _DJANGO_OPTIONS_WITH_VALUE:
            if words:
                words.pop(0)
            continue
        if word.startswith(tuple(f"{option}=" for option in _DJANGO_OPTIONS_WITH_VALUE)):
            continue
        kept.append(word)
    return kept


def run_appd(argv: Sequence[str]) -> int:
    """Run appd's command line with ``settings.APPD`` and Django's plugins; the exit code."""
    with config_source(django_config_source()):
        return cli.main(argv)


class Command(BaseCommand):
    """Delegates to appd's command line (``manage.py appd --help`` lists the commands)."""

    help = "Run, start, stop and call appd services with this project's settings (settings.APPD)."
    #: appd checks its own configuration (``appd check``); Django's checks are ``manage.py check``.
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "appd_args",
            nargs=argparse.REMAINDER,
            metavar="COMMAND ...",
            help="an appd command and its arguments",
        )

    def run_from_argv(self, argv: list[str]) -> None:
        """From ``manage.py``: hand every argument to appd and exit with its exit code."""
        code = run_appd(appd_arguments(argv[2:]))
        if code:
            sys.exit(code)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help appd``: appd's own help."""
        with config_source(django_config_source()):
            hooks = invocation_hooks(None)
        cli.build_parser(hooks).print_help()

    def handle(self, *args: Any, **options: Any) -> None:
        """From ``call_command("appd", "status")``: a non-zero exit is a CommandError."""
        argv = [*args, *options["appd_args"]]
        code = run_appd(argv)
        if code:
            raise CommandError(f"appd {' '.join(argv)} exited with {code}", returncode=code)
