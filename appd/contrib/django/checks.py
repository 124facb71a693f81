"""Django system checks for appd (``manage.py check``), tagged ``appd``.

=============  ==================================================================================
``appd.E001``  ``settings.APPD`` is malformed: not a dict, an unknown key, a bad value, a setting
               a service class does not have.
``appd.E002``  a ``services.<name>`` section (or an ``enabled`` entry) names no discovered
               service.
``appd.E003``  an app's ``services.py`` cannot be imported (the traceback is in the hint).
``appd.E004``  two service classes have one name.
``appd.W005``  an ``env:``/``file:`` secret cannot be resolved in this process; ``appd.E005``
               with ``check --deploy``.
``appd.W006``  a secret written literally in ``settings.APPD`` while ``DEBUG = False``.
``appd.E007``  ``settings.appd`` (or another spelling) instead of ``APPD``: it would be ignored.
``appd.E008``  two services (or a service and an address a plugin declares, such as the
               ``[prometheus]`` endpoint) listen on one address: the message names both.
=============  ==================================================================================

The checks are registered by :meth:`AppdAppConfig.ready` and run only when Django runs its
checks: registering them imports no ``services.py`` and opens no socket.  Running them imports
each app's ``services.py`` (as ``manage.py appd`` does), but binds nothing: whether a port is
free is ``manage.py appd check``'s business.  A host that only calls services (its web workers
lack a service's driver library) silences ``appd.E003`` with ``SILENCED_SYSTEM_CHECKS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from django.core.checks import CheckMessage, Error, Warning, register

if TYPE_CHECKING:
    from appd.cli.diagnosis import Finding

# appd's configuration, discovery and plugin machinery are imported when the checks run, not
# when they are registered: a web worker starting up pays for none of it.

__all__ = ["TAG", "check_deployment", "check_settings", "register_checks"]

#: The tag of every appd check: ``manage.py check --tag appd`` runs only these.
TAG: Final = "appd"

#: Check ids by :class:`appd.cli.diagnosis.Kind` value.
_IDS: Final = {
    "configuration": "appd.E001",
    "unknown service": "appd.E002",
    "import": "appd.E003",
    "duplicate": "appd.E004",
    "conflict": "appd.E008",
}
_SECRET_WARNING: Final = "appd.W005"
_SECRET_ERROR: Final = "appd.E005"
_LITERAL_SECRET: Final = "appd.W006"
_MISSPELLED: Final = "appd.E007"


def register_checks() -> None:
    """Register appd's checks with Django (what ``AppdAppConfig.ready`` calls)."""
    register(check_settings, TAG)
    register(check_deployment, TAG, deploy=True)


def check_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Every appd check but the deployment ones."""
    from appd.cli.diagnosis import diagnose
    from appd.contrib.django.config import django_config_source

    messages = _misspelled()
    import_errors = _import_errors()
    messages += import_errors
    diagnosis = diagnose(source=django_config_source(), skip_imports=bool(import_errors))
    messages += [_message(finding, deploy=False) for finding in diagnosis.findings]
    messages += _literal_secrets()
    return messages


def check_deployment(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``check --deploy``: a secret that cannot be resolved is an error."""
    from appd.cli.diagnosis import Kind, diagnose
    from appd.contrib.django.config import django_config_source

    diagnosis = diagnose(source=django_config_source(), skip_imports=True)
    return [
        _message(finding, deploy=True)
        for finding in diagnosis.findings
        if finding.kind is Kind.SECRET
    ]


def _message(finding: Finding, *, deploy: bool) -> CheckMessage:
    from appd.cli.diagnosis import Kind

    if finding.kind is Kind.SECRET:
        if deploy:
            return Error(finding.message, hint=finding.hint, id=_SECRET_ERROR)
        return Warning(finding.message, hint=finding.hint, id=_SECRET_WARNING)
    hint = finding.hint
    if finding.details:
        hint = f"{hint}\n{finding.details}" if hint else finding.details
    return Error(finding.message, hint=hint, id=_IDS[finding.kind.value])


def _misspelled() -> list[CheckMessage]:
    """``appd = {...}`` in the settings module: Django reads upper-case names only."""
    import importlib

    from django.conf import settings

    from appd.contrib.django.config import SETTING, SOURCE

    module_name = getattr(settings, "SETTINGS_MODULE", None)
    if not module_name:
        return []
    module = importlib.import_module(module_name)
    return [
        Error(
            f"settings.{name} is not read: appd's setting is {SOURCE}",
            hint=f"rename it to {SETTING}",
            id=_MISSPELLED,
        )
        for name in vars(module)
        if name.upper() == SETTING and name != SETTING
    ]


def _import_errors() -> list[CheckMessage]:
    """One error per installed app whose ``services.py`` cannot be imported."""
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    from appd.cli.diagnosis import format_traceback
    from appd.discovery import SERVICES_MODULE, import_services_module
    from appd.errors import DiscoveryError

    messages: list[CheckMessage] = []
    for app in apps.get_app_configs():
        if not module_has_submodule(app.module, SERVICES_MODULE):
            continue
        try:
            import_services_module(
                f"{app.name}.{SERVICES_MODULE}", f"services.py of Django app {app.label!r}"
            )
        except DiscoveryError as exc:
            cause = exc.__cause__
            messages.append(
                Error(
                    exc.summary,
                    hint=format_traceback(cause) if cause is not None else exc.details,
                    obj=app.label,
                    id=_IDS["import"],
                )
            )
    return messages


def _literal_secrets() -> list[CheckMessage]:
    """A secret written into the settings module of a production site."""
    from django.conf import settings

    from appd.config import SECRET_SETTINGS
    from appd.contrib.django.config import SETTING, SOURCE

    data = getattr(settings, SETTING, None)
    if settings.DEBUG or not isinstance(data, Mapping):
        return []
    services = data.get("services")
    if not isinstance(services, Mapping):
        return []
    return [
        Warning(
            f"{SOURCE}: services.{name}.{key} is written in the settings with DEBUG = False",
            hint='read it from the environment or a file: "env:NAME" or "file:PATH"',
            id=_LITERAL_SECRET,
        )
        for name, table in services.items()
        if isinstance(table, Mapping)
        for key, value in table.items()
        if key in SECRET_SETTINGS and _literal(value)
    ]


def _literal(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("env:", "file:"))
    if isinstance(value, Mapping):
        return any(_literal(v) for v in value.values())
    if isinstance(value, Iterable):
        return True
    return value is not None
