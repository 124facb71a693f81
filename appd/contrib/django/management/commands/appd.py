"""``python manage.py appd COMMAND ...``: appd's commands as a Django management command.

The subcommands, their options and their exit codes are those of the ``appd`` command
(``docs/cli.md``); the configuration is ``settings.APPD`` unless ``--config`` names a file
(without either, the usual ``APPD_CONFIG`` / ``appd.toml`` lookup).  Everything else is Django's
way: each subcommand takes Django's standard options (``-v``, ``--settings``, ``--pythonpath``,
``--traceback``, ``--no-color``, ``--force-color``), output goes through ``self.stdout`` and
``self.stderr`` (so ``call_command("appd", "status", stdout=buf)`` captures it), and from
``call_command`` a failure is a :class:`~django.core.management.base.CommandError` carrying the
error's text.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from appd import cli
from appd.cli.app import config_source, invocation_hooks
from appd.cli.commands import add_commands, appd_version, output_closed
from appd.contrib.django.config import django_config_source
from appd.errors import AppdError
from appd.hooks import Hooks, load_hooks
from appd.logging import configure_logging

__all__ = ["Command"]

#: The log level of appd's own messages (warnings about plugins, secrets) for each verbosity.
LOG_LEVELS: Final = {0: "ERROR", 1: "WARNING", 2: "INFO", 3: "DEBUG"}

#: Django's standard options, given to every subcommand too (``manage.py appd status -v 2``);
#: ``manage.py`` itself applies ``--settings`` and ``--pythonpath`` wherever they stand.
_STANDARD_OPTIONS: Final = (
    (("-v", "--verbosity"), {"type": int, "choices": [0, 1, 2, 3], "help": "verbosity level"}),
    (("--settings",), {"help": "a settings module, e.g. mysite.settings"}),
    (("--pythonpath",), {"help": "a directory to add to the Python path"}),
    (("--traceback",), {"action": "store_true", "help": "show the traceback of an error"}),
    (("--no-color",), {"action": "store_true", "help": "don't colorize the output"}),
    (("--force-color",), {"action": "store_true", "help": "force colorized output"}),
)


def _standard_options(parser: argparse.ArgumentParser) -> None:
    """Django's standard options on a subcommand; unset unless given there."""
    for flags, kwargs in _STANDARD_OPTIONS:
        parser.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)


class _Through:
    """A text stream writing through a Django :class:`OutputWrapper`, for code that prints:
    ``print`` writes the newline itself, so the wrapper adds none.

    :param styled: apply the wrapper's style (False for standard error, where log lines go:
        Django would colour every one of them as an error).
    """

    def __init__(self, wrapper: OutputWrapper, *, styled: bool = True) -> None:
        self.wrapper = wrapper
        self.styled = styled

    def write(self, text: str) -> int:
        if self.styled:
            self.wrapper.write(text, ending="")
        else:
            self.wrapper.write(text, style_func=_unstyled, ending="")
        return len(text)

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()

    def fileno(self) -> int:
        out = cast(TextIO, self.wrapper._out)
        return out.fileno()


def _unstyled(text: str) -> str:
    return text


class Command(BaseCommand):
    """``manage.py appd``: run, start, stop and call appd services with this project's
    settings."""

    help = (
        "Run, start, stop and call appd services with this project's settings: the "
        "configuration is settings.APPD (docs/django.md), the services are the classes in "
        "each installed app's services.py."
    )
    #: The commands check the configuration themselves (``manage.py appd check``); the project's
    #: system checks, appd's included, are ``manage.py check``.
    requires_system_checks = []

    def get_version(self) -> str:
        """``manage.py appd --version`` prints appd's version, not Django's."""
        return f"appd {appd_version()}"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--config",
            metavar="PATH",
            help="read this configuration file instead of settings.APPD",
        )
        # Django's parser gives its subcommands' parsers its own way of reporting usage errors.
        commands = parser.add_subparsers(dest="command", metavar="COMMAND")
        add_commands(commands, self._hooks(), common=_standard_options)
        self._subcommands: dict[str, argparse.ArgumentParser] = dict(commands.choices)

    def _from_command_line(self) -> bool:
        """True when run by ``manage.py`` (Django's ``run_from_argv``), not ``call_command``."""
        return bool(getattr(self, "_called_from_command_line", False))

    def _hooks(self) -> Hooks:
        """The command's one plugin manager (built once): builtins, the connections plugin,
        the ``plugins`` of ``settings.APPD`` and installed entry points; plugins' subcommands
        are added to the parser, and the subcommand uses the same manager."""
        hooks: Hooks | None = getattr(self, "_plugin_hooks", None)
        if hooks is None:
            source = django_config_source()
            with config_source(source):
                # An unreadable configuration is reported when the subcommand loads it.
                hooks = invocation_hooks(None) or load_hooks(plugins=source.plugins)
            self._plugin_hooks = hooks
        return hooks

    def execute(self, *args: Any, **options: Any) -> str | None:
        """Django's ``execute``; a reader that closed our output ends the command quietly."""
        try:
            result: str | None = super().execute(*args, **options)
            self.stdout.flush()  # here, where a closed pipe can still be handled
        except BrokenPipeError:
            if self._from_command_line():
                sys.exit(output_closed())
            raise
        return result

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen subcommand with ``settings.APPD`` as the configuration.

        From ``manage.py`` an error prints ``appd: error: ...`` and the command exits with
        appd's exit code; from ``call_command`` a non-zero exit is a :class:`CommandError`
        with that ``returncode``, and its message holds the error's text.
        """
        handler: Callable[[argparse.Namespace], int] | None = options.get("handler")
        if handler is None:
            if self._from_command_line():
                self.print_help("manage.py", "appd")
                sys.exit(cli.EXIT_USAGE)
            raise CommandError("no command given", returncode=cli.EXIT_USAGE)
        # Django hands the positional arguments named ``args`` (``call``'s) over separately.
        options = {"args": list(args), **options}
        namespace = argparse.Namespace(**options)
        if options.get("config") is None:
            namespace.hooks = self._hooks()
        words = self._words(options)
        source = django_config_source()
        error: AppdError | None = None
        with self._output(), config_source(source):
            configure_logging(
                "cli", stream=sys.stderr, level=LOG_LEVELS.get(options["verbosity"], "WARNING")
            )
            try:
                code = handler(namespace)
            except AppdError as exc:
                if options["traceback"]:
                    raise
                error, code = exc, cli.EXIT_ERROR
            except KeyboardInterrupt:
                code = cli.EXIT_ERROR
        if self._from_command_line():
            if error is not None:
                self.stderr.write(f"appd: error: {error}")
            if code:
                sys.exit(code)
            return
        if error is not None:
            raise CommandError(f"appd {words}: {error}", returncode=code) from error
        if code:
            raise CommandError(f"appd {words} exited with {code}", returncode=code)

    def _words(self, options: dict[str, Any]) -> str:
        """The subcommand as it could have been typed, for messages (``status --json``)."""
        command = str(options["command"])
        words = [command]
        parser = getattr(self, "_subcommands", {}).get(command)
        for action in parser._actions if parser is not None else ():
            value = options.get(action.dest, action.default)
            if action.default is argparse.SUPPRESS or value == action.default:
                continue  # help, Django's standard options, what was not given
            if not action.option_strings:
                values = value if isinstance(value, list) else [value]
                words.extend(str(v) for v in values)
            elif isinstance(value, bool):
                words.append(action.option_strings[-1])
            else:
                words.extend([action.option_strings[-1], str(value)])
        return " ".join(words)

    @contextlib.contextmanager
    def _output(self) -> Iterator[None]:
        """Whatever appd prints goes through ``self.stdout`` and ``self.stderr``."""
        out: TextIO = _Through(self.stdout)  # type: ignore[assignment]
        err: TextIO = _Through(self.stderr, styled=False)  # type: ignore[assignment]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
