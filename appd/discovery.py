"""Finding service classes, wherever they are declared.

Sources, in this order:

1. the ``appd.services`` entry-point group: an entry names a service class
   (``power = "appd_power.services:PowerService"``) or a module
   (``power = "appd_power.services"``), whose service classes are taken;
2. the ``appd_services()`` hook of every plugin, the builtin
   :mod:`appd.contrib.django.discovery` among them: ``<app>/services.py`` of every app in
   Django's ``INSTALLED_APPS`` when Django settings are configured (as Django's admin discovers
   ``admin.py``), so this module imports nothing of Django;
3. modules and directories named in configuration.

A module's services are the concrete :class:`~appd.service.AppServiceBase` subclasses it
*defines*: a class merely imported into a module belongs to the module that defines it, and
abstract bases are never services.  A class found by two sources is one service; two different
classes with one name raise :class:`~appd.errors.DuplicateServiceError` naming both sources.
A module that fails to import raises :class:`~appd.errors.DiscoveryError` naming the module,
with the original traceback in the message: nothing is swallowed.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

import importlib_metadata

from appd.errors import DiscoveryError, DuplicateServiceError
from appd.hooks import Hooks, get_plugin_manager
from appd.service import AppServiceBase, is_service_class

__all__ = [
    "DJANGO_PLUGIN",
    "ENTRY_POINT_GROUP",
    "SERVICES_MODULE",
    "DiscoveredService",
    "class_path",
    "discover_services",
    "import_services_module",
    "services_in_module",
]

#: Entry-point group through which distributions declare services.
ENTRY_POINT_GROUP: Final = "appd.services"

#: The builtin plugin that contributes Django apps' ``services.py`` (``django=False`` skips it).
DJANGO_PLUGIN: Final = "appd.contrib.django.discovery"

#: The module name looked for in every Django app and every configured directory.
SERVICES_MODULE: Final = "services"


@dataclass(frozen=True, slots=True)
class DiscoveredService:
    """A service class and where it was found."""

    #: The service's name (its class's ``name``).
    name: str
    #: The service class.
    cls: type[AppServiceBase]
    #: Where it came from: ``"entry point appd-power-plugin:power"``, ``"module shop.services"``.
    source: str


def services_in_module(module: ModuleType) -> list[type[AppServiceBase]]:
    """The service classes ``module`` defines, in definition order (imported ones excluded)."""
    return [
        obj
        for obj in vars(module).values()
        if is_service_class(obj) and obj.__module__ == module.__name__
    ]


def import_services_module(module_name: str, what: str) -> ModuleType:
    """Import ``module_name``; any failure is a DiscoveryError naming ``what`` and the module."""
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise _failure(f"cannot import {what} (module {module_name})", exc) from exc


def _failure(what: str, exc: BaseException) -> DiscoveryError:
    """``what`` failed because of ``exc``: one line saying so, then the original traceback."""
    return DiscoveryError(
        f"{what}: {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
    )


class _Collector:
    """Accumulates services, refusing two different classes under one name."""

    def __init__(self) -> None:
        self.found: dict[str, DiscoveredService] = {}

    def add(self, cls: object, source: str) -> None:
        if not is_service_class(cls):
            raise DiscoveryError(f"{source} gave {cls!r}, which is not a concrete service class")
        assert isinstance(cls, type) and issubclass(cls, AppServiceBase)
        name = cls.name
        seen = self.found.get(name)
        if seen is None:
            self.found[name] = DiscoveredService(name=name, cls=cls, source=source)
        elif seen.cls is not cls:
            raise DuplicateServiceError(
                f"two services are named {name!r}: {class_path(seen.cls)} from {seen.source} "
                f"and {class_path(cls)} from {source}"
            )

    def add_module(self, module: ModuleType, source: str) -> None:
        for cls in services_in_module(module):
            self.add(cls, source)


def class_path(cls: type) -> str:
    """The dotted path of ``cls``, e.g. ``"shop.services.PowerService"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _from_entry_points(collector: _Collector) -> None:
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name}:" if ep.dist is not None else ""
        source = f"entry point {dist}{ep.name}"
        try:
            target = ep.load()
        except Exception as exc:
            raise _failure(f"cannot load {source} ({ep.value})", exc) from exc
        if isinstance(target, ModuleType):
            collector.add_module(target, source)
        else:
            collector.add(target, source)


def _from_hooks(collector: _Collector, hooks: Hooks, *, django: bool) -> None:
    for plugin_name, classes in hooks.appd_services():
        if not django and plugin_name == DJANGO_PLUGIN:
            continue
        for item in classes:
            if isinstance(item, ModuleType):
                collector.add_module(item, f"module {item.__name__}")
            else:
                collector.add(item, f"hook appd_services of plugin {plugin_name}")


def _from_directory(collector: _Collector, directory: Path) -> None:
    """``services.py`` in ``directory`` and in each package directly under it."""
    if not directory.is_dir():
        raise DiscoveryError(f"services directory {str(directory)!r} does not exist")
    root = str(directory.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    names = []
    if (directory / f"{SERVICES_MODULE}.py").is_file():
        names.append(SERVICES_MODULE)
    for child in sorted(directory.iterdir()):
        if child.is_dir() and (child / f"{SERVICES_MODULE}.py").is_file():
            names.append(f"{child.name}.{SERVICES_MODULE}")
    for module_name in names:
        module = import_services_module(module_name, f"services module in directory {root}")
        expected = directory.resolve() / (module_name.replace(".", os.sep) + ".py")
        found = Path(getattr(module, "__file__", "") or "").resolve()
        if found != expected:
            raise DiscoveryError(
                f"services module {module_name!r} of directory {root} is shadowed by "
                f"{str(found)!r}, imported under the same name: give the directory's "
                "services a package of their own (<dir>/<package>/services.py)"
            )
        collector.add_module(module, f"module {module_name}")


def discover_services(
    *,
    hooks: Hooks | None = None,
    modules: Sequence[str] = (),
    directories: Iterable[str | os.PathLike[str]] = (),
    entry_points: bool = True,
    django: bool = True,
) -> list[DiscoveredService]:
    """Every service class from every source, in discovery order.

    :param hooks: the plugin facade whose ``appd_services()`` results count (none when omitted).
    :param modules: importable module names whose service classes are taken.
    :param directories: directories holding ``services.py`` or packages with a ``services.py``;
        each is put on ``sys.path`` so those modules import under their own names.
    :param entry_points: read the ``appd.services`` entry-point group.
    :param django: look at Django's installed apps when Django settings are configured.
    :raises DiscoveryError: a module or entry point fails to import, or names no service class.
    :raises DuplicateServiceError: two different classes have one name.
    """
    collector = _Collector()
    if entry_points:
        _from_entry_points(collector)
    if hooks is None:
        # Only the builtin plugins (Django's app discovery among them), no third parties.
        hooks = Hooks(get_plugin_manager(entry_points=False))
    _from_hooks(collector, hooks, django=django)
    for module_name in modules:
        module = import_services_module(module_name, "configured services module")
        collector.add_module(module, f"module {module_name}")
    for directory in directories:
        _from_directory(collector, Path(directory))
    return list(collector.found.values())
