"""appd/capacity/ is a layer below services: it imports only errors, logging, configuration and
itself, and a client that imports appd pays nothing for it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import appd.capacity

ALLOWED = ("appd.errors", "appd.scope", "appd.logging", "appd.config", "appd.capacity")


def test_capacity_imports_only_lower_layers() -> None:
    folder = Path(appd.capacity.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name == "appd" or name.startswith("appd."):
                    assert name.startswith(ALLOWED), f"{path.name} imports {name}"


def test_importing_appd_loads_neither_the_capacity_layer_nor_redis() -> None:
    code = (
        "import sys, appd; from appd import SecureSocketAppClient; "
        "print(any(m.startswith('appd.capacity') for m in sys.modules), 'redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
