"""The Django application ``appd.contrib.django`` (what ``INSTALLED_APPS`` names)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["AppdAppConfig"]


class AppdAppConfig(AppConfig):
    """Registers the ``appd`` management command and appd's system checks.

    ``ready()`` only registers the checks (:mod:`appd.contrib.django.checks`): a Django process
    (a web worker, a shell, a migration) must not import services, open sockets or touch the
    database because appd is installed.  The checks themselves run when Django runs its checks.
    """

    name = "appd.contrib.django"
    label = "appd"
    verbose_name = "appd: app service daemons"

    def ready(self) -> None:
        from appd.contrib.django.checks import register_checks

        register_checks()
