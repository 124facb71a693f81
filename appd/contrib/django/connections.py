"""A plugin that keeps Django database connections out of forks.

A connection is a socket (or a SQLite handle) with per-connection state: if a parent and a child
both used the one they share, their protocol streams would interleave.  So the supervisor closes
its connections just before it forks a service process, and the new process closes whatever it
still holds before the service's ``setup()``; each process then opens its own on first use.

``manage.py appd`` registers this module as a plugin.  Elsewhere (the plain ``appd`` command in
a Django project) name it in the ``plugins`` setting:
``plugins = ["appd.contrib.django.connections"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appd.hookspecs import hookimpl

if TYPE_CHECKING:
    from appd.service import AppServiceBase

__all__ = ["appd_post_fork", "appd_pre_fork", "close_connections"]


def close_connections() -> None:
    """Close every database connection this process opened (none: nothing happens).

    Does nothing when Django is not set up, so the plugin is harmless outside a Django project.
    """
    from django.apps import apps

    if not apps.ready:
        return
    from django.db import connections

    connections.close_all()


@hookimpl(trylast=True)
def appd_pre_fork(service: AppServiceBase, worker: int) -> None:
    """In the supervisor, after every other plugin's ``appd_pre_fork``: close connections."""
    close_connections()


@hookimpl(tryfirst=True)
def appd_post_fork(service: AppServiceBase, worker: int) -> None:
    """In the new service process, before any other plugin runs: close inherited connections."""
    close_connections()
