"""Parsing and loading "module:function" entries."""

from __future__ import annotations

import pytest

from appd.errors import EntryLoadError
from appd.runtime.entry import load_entry, parse_entry


@pytest.mark.parametrize(
    ("entry", "parts"),
    [
        ("test1:daemon_main", ("test1", "daemon_main")),
        ("pkg.mod:Class.method", ("pkg.mod", "Class.method")),
    ],
)
def test_well_formed_entries(entry: str, parts: tuple[str, str]) -> None:
    assert parse_entry(entry) == parts


@pytest.mark.parametrize(
    "entry", ["", "module", "module:", ":func", "a:b:c", "mod-ule:f", "mod:1f", " mod:f"]
)
def test_malformed_entries_raise_value_error(entry: str) -> None:
    with pytest.raises(ValueError, match="module:function"):
        parse_entry(entry)


def test_load_entry_follows_dotted_attributes() -> None:
    import os.path

    assert load_entry("os.path:join") is os.path.join
    assert load_entry("collections:OrderedDict.fromkeys") == __import__(
        "collections"
    ).OrderedDict.fromkeys


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("os:no_such_function", "has no attribute 'no_such_function'"),
        ("os:sep", "not a callable"),
    ],
)
def test_load_failures_say_what_and_why(entry: str, message: str) -> None:
    with pytest.raises(EntryLoadError, match=message):
        load_entry(entry)
