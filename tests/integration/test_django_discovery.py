"""``<app>/services.py`` discovery in a real Django project, each in a fresh interpreter.

``django.setup()`` is process-global, so every project runs in its own Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("django")

SERVICE = """
from appd import AppServiceBase

class {cls}(AppServiceBase):
    pass
"""

REPORT = """
import json
import appd

found = appd.discover_services(entry_points=False)
print(json.dumps([[s.name, s.cls.__module__, s.source] for s in found]))
"""


def make_app(root: Path, name: str, services: str | None) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    if services is not None:
        (root / name / "services.py").write_text(textwrap.dedent(services))


def run_python(root: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_services_py_of_every_installed_app_is_discovered(tmp_path: Path) -> None:
    make_app(tmp_path, "shop", SERVICE.format(cls="PowerService"))
    make_app(
        tmp_path,
        "billing",
        "from shop.services import PowerService  # imported, not billing's\n"
        + SERVICE.format(cls="LicenceSeatService"),
    )
    make_app(tmp_path, "blog", None)
    (tmp_path / "site_settings.py").write_text(
        'SECRET_KEY = "test"\n'
        'INSTALLED_APPS = ["django.contrib.contenttypes", "shop", "blog", "billing"]\n'
    )
    done = run_python(tmp_path, REPORT, DJANGO_SETTINGS_MODULE="site_settings")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        ["power", "shop.services", "module shop.services"],
        ["licence_seat", "billing.services", "module billing.services"],
    ]


def test_settings_configured_in_code_are_honoured(tmp_path: Path) -> None:
    make_app(tmp_path, "shop", SERVICE.format(cls="PowerService"))
    code = """
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["shop"])
    """
    done = run_python(tmp_path, textwrap.dedent(code) + REPORT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["power", "shop.services", "module shop.services"]]


def test_an_import_error_in_an_apps_services_py_names_the_app(tmp_path: Path) -> None:
    make_app(tmp_path, "shop", SERVICE.format(cls="PowerService"))
    make_app(tmp_path, "outlets", "import appd\nimport pdu_driver_that_is_missing\n")
    code = """
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["shop", "outlets"])
    """
    done = run_python(tmp_path, textwrap.dedent(code) + REPORT)
    assert done.returncode == 1
    assert done.stdout == ""
    assert (
        "appd.errors.DiscoveryError: cannot import services.py of Django app 'outlets' "
        "(module outlets.services): ModuleNotFoundError: "
        "No module named 'pdu_driver_that_is_missing'"
    ) in done.stderr
    assert 'outlets/services.py", line 2, in <module>' in done.stderr
