"""``"module:function"`` entry strings: checked at once, imported where the code will run."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from appd.errors import EntryLoadError

__all__ = ["load_entry", "parse_entry"]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_ENTRY = re.compile(rf"(?P<module>{_DOTTED}):(?P<attr>{_DOTTED})")


def parse_entry(entry: str) -> tuple[str, str]:
    """Split ``"package.module:object.function"`` into module and attribute path.

    :raises ValueError: the string is not of that form.
    """
    match = _ENTRY.fullmatch(entry) if isinstance(entry, str) else None
    if match is None:
        raise ValueError(
            f"entry must look like 'module:function' (dotted names allowed), got {entry!r}"
        )
    return match["module"], match["attr"]


def load_entry(entry: str) -> Callable[..., object]:
    """Import the module of ``entry`` and return the callable it names.

    :raises ValueError: the string is malformed.
    :raises EntryLoadError: the module fails to import, the attribute is missing or is not
        callable; the message says which and why.
    """
    module_name, attr_path = parse_entry(entry)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise EntryLoadError(
            f"cannot import module {module_name!r} of entry {entry!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise EntryLoadError(
                f"entry {entry!r}: {type(target).__name__} {getattr(target, '__name__', target)!r}"
                f" has no attribute {part!r}"
            ) from None
    if not callable(target):
        raise EntryLoadError(f"entry {entry!r} names a {type(target).__name__}, not a callable")
    return target
