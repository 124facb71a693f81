"""Django apps' ``services.py``, contributed through the ``appd_services`` hook.

A builtin plugin: the plugin manager registers it in every process, and it imports Django only
when Django settings are configured (``DJANGO_SETTINGS_MODULE`` set, or ``settings.configure()``
called), so the core of appd never imports Django.  Each installed app with a ``services``
submodule contributes that module; discovery takes the service classes it defines (as Django's
admin discovers ``admin.py``).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from appd.discovery import SERVICES_MODULE, import_services_module
from appd.hookspecs import hookimpl

__all__ = ["appd_services", "django_in_use"]


def django_in_use() -> bool:
    """True when this process has Django settings to read."""
    if "django" not in sys.modules and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False
    try:
        from django.conf import settings
    except ImportError:
        return False
    return bool(settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"))


@hookimpl
def appd_services() -> list[ModuleType]:
    """The ``services`` module of every installed Django app that has one."""
    if not django_in_use():
        return []
    import django
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    if not apps.ready:
        django.setup()
    modules = []
    for app in apps.get_app_configs():
        if not module_has_submodule(app.module, SERVICES_MODULE):
            continue
        module_name = f"{app.name}.{SERVICES_MODULE}"
        modules.append(
            import_services_module(module_name, f"services.py of Django app {app.label!r}")
        )
    return modules
