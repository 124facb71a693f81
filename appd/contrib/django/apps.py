"""The Django application ``appd.contrib.django`` (what ``INSTALLED_APPS`` names)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["AppdAppConfig"]


class AppdAppConfig(AppConfig):
    """Registers the ``appd`` management command; does nothing at start-up.

    ``ready()`` is deliberately not overridden: a Django process (a web worker, a shell, a
    migration) must not import services, open sockets or touch the database because appd is
    installed.
    """

    name = "appd.contrib.django"
    label = "appd"
    verbose_name = "appd: app service daemons"
