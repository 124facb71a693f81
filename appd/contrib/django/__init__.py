"""appd for Django sites: add ``"appd.contrib.django"`` to ``INSTALLED_APPS``.

It gives ``python manage.py appd run|start|stop|restart|status|call|list|plugins|check|keygen``
(a Django management command: standard options, ``call_command`` output, ``run --reload`` for
development) with the project's settings loaded; ``settings.APPD`` is the configuration (the
keys of ``appd.toml``); ``<app>/services.py`` of every installed app is discovered; system
checks tagged ``appd`` (``appd.E001`` ...) report what is wrong; Django's database connections
are closed before each fork and in each new process.  Views and serializers call
services through :func:`service_client` (or the ``clients`` accessor: ``clients["power"]``),
built from ``settings.APPD`` alone when it gives the service's address and credentials; no
connection opens until the first request.
See ``docs/django.md``.

Importing this package imports nothing of Django's: the pieces live in their own modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appd.contrib.django.client import clients, service_client

__all__ = ["clients", "service_client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from appd.contrib.django import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
