"""``settings.APPD``: a Django project's appd configuration.

``APPD`` is a dict with the keys of ``appd.toml`` (see ``docs/configuration.md``), validated by
the same code, with errors naming ``settings.APPD``.  Relative paths (``pid_file``, ``paths``,
...) are taken from ``settings.BASE_DIR``, or from the working directory when the project has
no ``BASE_DIR``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from appd.cli.app import ConfigSource
from appd.config import RawConfig
from appd.errors import ConfigurationError

__all__ = [
    "SETTING",
    "SOURCE",
    "django_config_source",
    "fresh_settings_config",
    "project_config_source",
    "settings_config",
    "settings_module_of",
]

#: The Django setting that holds appd's configuration.
SETTING: Final = "APPD"

#: How errors and ``appd check`` name that configuration.
SOURCE: Final = f"settings.{SETTING}"


def settings_config() -> RawConfig | None:
    """``settings.APPD`` as read (a deep copy: plugins may adjust it), or None when unset (or
    when Django has no settings to read).

    Sets Django up first when the settings are configured but the apps are not loaded yet.

    :raises ConfigurationError: ``APPD`` is not a dict.
    """
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None  # no Django project here: the usual files
    if not apps.ready:
        try:
            django.setup()
        except ImportError as exc:
            module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
            raise ConfigurationError(
                f"cannot set Django up with DJANGO_SETTINGS_MODULE={module!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    data = getattr(settings, SETTING, None)
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{SOURCE}: expected a dict of settings, got {type(data).__name__} {data!r}"
        )
    base_dir = getattr(settings, "BASE_DIR", None)
    return RawConfig(
        copy.deepcopy(dict(data)),
        SOURCE,
        Path(base_dir).resolve() if base_dir is not None else Path.cwd(),
    )


#: Run in a fresh interpreter by :func:`fresh_settings_config`: the settings module imported
#: anew (no ``django.setup()``: only the settings are read), ``APPD`` and ``BASE_DIR`` as JSON.
_READ_SETTINGS: Final = """
import json, sys
from django.conf import settings
data = getattr(settings, "APPD", None)
base = getattr(settings, "BASE_DIR", None)
json.dump({"APPD": data, "BASE_DIR": None if base is None else str(base)}, sys.stdout,
          default=str)
"""


def fresh_settings_config() -> RawConfig | None:
    """``settings.APPD`` as the settings module on disk says now: what a reload applies.

    Django imports a settings module once per process, so it is read in a fresh interpreter
    (with this process's ``sys.path`` and ``DJANGO_SETTINGS_MODULE``); values JSON cannot
    hold (a ``Path``) arrive as their strings, which is how every path setting is read anyway.

    :raises ConfigurationError: the settings module cannot be imported (its error's last
        line), or ``APPD`` is not a dict.
    """
    from django.conf import settings

    module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(settings, "SETTINGS_MODULE", "")
    if not module:
        return settings_config()  # configured in code: nothing on disk to read again
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
    }
    done = subprocess.run(
        [sys.executable, "-c", _READ_SETTINGS], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no error output"]
        raise ConfigurationError(
            f"{SOURCE}: the settings module {module!r} cannot be read again: {lines[-1]}"
        )
    read = json.loads(done.stdout)
    data, base_dir = read["APPD"], read["BASE_DIR"]
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{SOURCE}: expected a dict of settings, got {type(data).__name__} {data!r}"
        )
    return RawConfig(dict(data), SOURCE, Path(base_dir).resolve() if base_dir else Path.cwd())


def django_config_source() -> ConfigSource:
    """The source ``manage.py appd`` installs: ``settings.APPD`` (read anew from the settings
    module on a reload) and the connections plugin."""
    from appd.contrib.django import connections

    return ConfigSource(
        read=settings_config,
        plugins=(connections,),
        entry="appd.contrib.django.config:django_config_source",
        reread=fresh_settings_config,
    )


#: ``os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")`` in a ``manage.py``.
_MANAGE_PY_SETTINGS: Final = re.compile(
    r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']"""
)


def settings_module_of(directory: Path) -> str | None:
    """The settings module ``directory/manage.py`` sets up (as ``startproject`` writes it)."""
    try:
        text = (directory / "manage.py").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    found = _MANAGE_PY_SETTINGS.search(text)
    return found.group(1) if found else None


def project_config_source(directory: Path | None = None) -> ConfigSource | None:
    """The plain ``appd`` command's way into a Django project, or None outside one.

    A Django project is recognised by ``DJANGO_SETTINGS_MODULE``, or by a ``manage.py`` in
    ``directory`` (the working directory) naming its settings module.  As ``manage.py``
    does, the directory goes on ``sys.path`` and ``DJANGO_SETTINGS_MODULE`` is set; the
    source is then the one ``manage.py appd`` uses, so both find the same configuration
    (``settings.APPD``) and the same supervisor.  Django is not imported here.
    """
    directory = (directory or Path.cwd()).resolve()
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or settings_module_of(directory)
    if not module:
        return None
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", module)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return django_config_source()
