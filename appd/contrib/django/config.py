"""``settings.APPD``: a Django project's appd configuration.

``APPD`` is a dict with the keys of ``appd.toml`` (see ``docs/configuration.md``), validated by
the same code, with errors naming ``settings.APPD``.  Relative paths (``pid_file``, ``paths``,
...) are taken from ``settings.BASE_DIR``, or from the working directory when the project has
no ``BASE_DIR``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from appd.cli.app import ConfigSource
from appd.config import RawConfig
from appd.errors import ConfigurationError

__all__ = ["SETTING", "SOURCE", "django_config_source", "settings_config"]

#: The Django setting that holds appd's configuration.
SETTING: Final = "APPD"

#: How errors and ``appd check`` name that configuration.
SOURCE: Final = f"settings.{SETTING}"


def settings_config() -> RawConfig | None:
    """``settings.APPD`` as read (a deep copy: plugins may adjust it), or None when unset.

    Sets Django up first when the settings are configured but the apps are not loaded yet.

    :raises ConfigurationError: ``APPD`` is not a dict.
    """
    import django
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        django.setup()
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


def django_config_source() -> ConfigSource:
    """The source ``manage.py appd`` installs: ``settings.APPD`` and the connections plugin."""
    from appd.contrib.django import connections

    return ConfigSource(
        read=settings_config,
        plugins=(connections,),
        entry="appd.contrib.django.config:django_config_source",
    )
