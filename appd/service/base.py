"""Services: the units the supervisor runs, each in processes of its own."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from appd.config import SettingsReader
from appd.errors import ConfigurationError
from appd.runtime import quit_requested, sleep

if TYPE_CHECKING:
    from appd.capacity import Capacities, Capacity

__all__ = ["RELOAD_MODES", "AppServiceBase", "is_service_class", "service_name_for"]

#: The ``reload`` setting's values: start the new process first, or stop the old one first.
RELOAD_MODES: Final = ("overlap", "stop-first")


def service_name_for(cls: type) -> str:
    """The default service name: the class name in snake case, without a ``Service`` suffix.

    ``PowerService`` -> ``power``; ``LicenceSeatService`` -> ``licence_seat``.
    """
    base = cls.__name__
    if base.endswith("Service") and base != "Service":
        base = base[: -len("Service")]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


class AppServiceBase:
    """A supervised unit of work that runs in its own process.

    Subclass it, and override :meth:`setup` (runs after fork: open connections and other lazy
    resources here, never at import), :meth:`run` (the work; by default waits until quit is
    requested) and :meth:`teardown`.  Settings are class attributes or properties, as in the
    seed; configuration may override them per service.

    A class that sets ``abstract = True`` in its own body is a base for other services, never a
    service itself.
    """

    #: Set to True in a class body to mark a base class that is not a service of its own.
    abstract: ClassVar[bool] = True

    #: Marks appd services for code that must not import this module (hook tracing shows a
    #: service by its ``repr``, which never holds a secret).
    __appd_service__: ClassVar[bool] = True

    #: The service's name; by default derived from the class name (see :func:`service_name_for`).
    name: str

    #: Names of the settings configuration may override (see :meth:`apply_settings`).
    #: Subclasses extend it: ``setting_names = Base.setting_names | {"mine"}``.
    setting_names: ClassVar[frozenset[str]] = frozenset({"reload"})

    #: How a reload (SIGHUP) replaces this service's processes: ``"overlap"`` starts the new
    #: process and stops the old one once the new one is ready (no gap); ``"stop-first"`` stops
    #: the old one first, for a resource that cannot take two holders at once.
    reload: str = "overlap"

    #: The configured capacities (``[capacities.<name>]``), given by appd before :meth:`setup`;
    #: None when the service runs without a configuration.
    capacities: Capacities | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        if "name" not in cls.__dict__:
            cls.name = service_name_for(cls)
        for setting in cls.setting_names:
            attr = inspect.getattr_static(cls, setting, None)
            if isinstance(attr, property):
                setattr(cls, setting, OverridableSetting(setting, attr))

    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Override settings on this instance (configuration does this before :meth:`setup`).

        Works whether the class defines a setting as a plain attribute or as a (read-only)
        property.  Raises :class:`~appd.errors.ConfigurationError` naming any unknown setting;
        nothing is changed then.
        """
        self._check_known(settings)
        for setting, value in settings.items():
            setattr(self, setting, value)

    def configure(
        self, table: Mapping[str, Any] | None = None, *, source: str = "configuration"
    ) -> Any:
        """Apply the service's ``[services.<name>]`` table once, before the service runs.

        A plain service only checks that every key is one of its :attr:`setting_names`;
        :class:`~appd.SecureSocketAppService` also validates every value into a frozen
        settings object.

        :param source: where the table came from, named in errors (``appd.toml``).
        :raises ConfigurationError: naming ``source``, the table and the unknown key.
        """
        table = dict(table or {})
        self._check_known(table, source=source)
        self._check_reload(table, source=source)
        for setting, value in table.items():
            setattr(self, setting, value)
        return None

    def _check_reload(self, table: Mapping[str, Any], *, source: str) -> None:
        """The ``reload`` setting, from the table or else the class, is one of
        :data:`RELOAD_MODES`; the error names where the bad value came from."""
        cls = type(self)
        if "reload" in table:
            reader = SettingsReader(table, source=source, prefix=f"services.{self.name}.")
        else:
            reader = SettingsReader(
                {"reload": self.reload}, source=source, prefix="",
                origins={"reload": f"{cls.__module__}.{cls.__qualname__}.reload"},
            )
        reader.choice("reload", "overlap", RELOAD_MODES)

    def _check_known(self, settings: Mapping[str, Any], *, source: str | None = None) -> None:
        unknown = sorted(set(settings) - self.setting_names)
        if unknown:
            known = ", ".join(sorted(self.setting_names)) or "none"
            where = f"{source}: services.{self.name}: " if source else ""
            raise ConfigurationError(
                f"{where}service {self.name!r} has no setting {', '.join(map(repr, unknown))} "
                f"(known settings: {known})"
            )

    def capacity(self, name: str) -> Capacity:
        """The configured capacity ``name``: at most its ``limit`` holders at once, across every
        process and host that shares its backend::

            with self.capacity("pdu").acquire(timeout=2.0) as lease:
                ...  # lease.token is the fencing token; lease.lost turns true if it was lost

        (``async with`` in async handlers).  :class:`~appd.errors.ConfigurationError` when no
        ``[capacities.<name>]`` table is configured.
        """
        if self.capacities is None:
            raise ConfigurationError(
                f"service {self.name!r}: no capacity {name!r} is configured (add a "
                f"[capacities.{name}] table)"
            )
        return self.capacities.get(name)

    def has_capacity(self, name: str) -> bool:
        """True when capacity ``name`` is configured (so :meth:`capacity` returns it)."""
        return self.capacities is not None and name in self.capacities

    def setup(self) -> None:
        """Prepare the service in its own process, after fork and before :meth:`run`."""

    def run(self) -> None:
        """Do the service's work until quit is requested."""
        while not quit_requested():
            sleep(1)

    def teardown(self) -> None:
        """Release what :meth:`setup` opened; runs after :meth:`run`, even when it raised."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class OverridableSetting:
    """A setting defined as a property that an instance may still override by assignment.

    Reading returns the instance's override if there is one, else the property's value.
    """

    def __init__(self, name: str, prop: property) -> None:
        self.name = name
        self.prop = prop
        self.__doc__ = prop.__doc__

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            return self.prop.__get__(obj, objtype)

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = value

    def __repr__(self) -> str:
        return f"<OverridableSetting {self.name!r}>"


def is_service_class(obj: object) -> bool:
    """True for a concrete subclass of :class:`AppServiceBase` (not abstract, not a base)."""
    return (
        inspect.isclass(obj)
        and issubclass(obj, AppServiceBase)
        and not obj.__dict__.get("abstract", False)
        and not inspect.isabstract(obj)
    )

