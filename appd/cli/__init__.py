"""The ``appd`` command: parsing and printing (:mod:`appd.cli.commands`), what each command does
(:mod:`appd.cli.app`) and the tables of ``list`` and ``plugins`` (:mod:`appd.cli.listing`)."""

from __future__ import annotations

from appd.cli.commands import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    main,
    parse_call_arguments,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "parse_call_arguments",
]
