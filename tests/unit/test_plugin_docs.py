"""docs/plugins.md documents every hook in appd/hookspecs.py, with every argument."""

from __future__ import annotations

import inspect
from pathlib import Path

from appd import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_every_hook_is_documented_with_its_arguments() -> None:
    text = DOC.read_text()
    specs = [name for name in vars(hookspecs) if name.startswith("appd_")]
    assert specs
    for name in specs:
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({args})`" in text, f"{name} is missing from {DOC}"
