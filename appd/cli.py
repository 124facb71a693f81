"""The ``appd`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from appd.plugins import Hooks, load_hooks

__all__ = ["build_parser", "main"]


def build_parser(hooks: Hooks | None = None) -> argparse.ArgumentParser:
    """The top-level parser; each subcommand adds its own subparser, then plugins add theirs."""
    parser = argparse.ArgumentParser(prog="appd", description="Run and call app service daemons.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if hooks is not None:
        hooks.appd_add_commands(subparsers=subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """Entry point of the ``appd`` console script; returns the process exit code."""
    parser = build_parser(hooks if hooks is not None else load_hooks())
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    return 0
