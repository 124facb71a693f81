"""The plugin manager: one factory builds it, one typed facade calls it.

:func:`get_plugin_manager` registers, in this order: the hook specifications, appd's builtin
plugins, plugins the caller passes, then every entry point of the ``appd.plugins`` group; then
it checks that every hook implemented has a specification.  Nothing happens at import time, so
each process (and each test) builds the manager it needs.

A third-party plugin that fails to import or to register is logged with its name and the error,
recorded in :attr:`AppdPluginManager.failures` and skipped; the others keep working.

Environment:

``APPD_DISABLE_PLUGINS=a,b``
    do not load the plugins (entry-point names or distribution names) ``a`` and ``b``.
``APPD_TRACE_HOOKS=1``
    log every hook call: its name, the plugins called, the arguments (secret-safe) and the
    outcome.

Core code calls hooks only through :class:`Hooks`, never through the untyped ``pm.hook``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import importlib_metadata
import pluggy

from appd import hookspecs
from appd.config import RawConfig, read_config
from appd.errors import AppdError, ConfigurationError, DiscoveryError
from appd.hookspecs import Service
from appd.logging import get_logger
from appd.transport.request import Request, RequestReply

if TYPE_CHECKING:
    import argparse
    import socket


__all__ = [
    "DISABLE_ENV",
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ESSENTIAL_PLUGINS",
    "TRACE_ENV",
    "AppdPluginManager",
    "Hooks",
    "PluginHooks",
    "PluginFailure",
    "configured_hooks",
    "get_plugin_manager",
    "import_plugin",
    "load_hooks",
]

#: Entry-point group that third-party plugins register under.
ENTRY_POINT_GROUP: Final = "appd.plugins"

#: Builtin plugins (module names) that cannot be disabled: appd does not work without them.
ESSENTIAL_PLUGINS: Final = ("appd.hooks.core",)

#: Builtin plugins (module names) registered after the essential ones; they can be disabled
#: through :data:`DISABLE_ENV` like any other.  Each imports nothing heavy until a hook runs.
DEFAULT_PLUGINS: Final = ("appd.contrib.django.discovery",)

#: Environment variable: comma-separated names of plugins not to load.
DISABLE_ENV: Final = "APPD_DISABLE_PLUGINS"

#: Environment variable: ``1`` logs every hook call.
TRACE_ENV: Final = "APPD_TRACE_HOOKS"

_log = get_logger("appd.plugins")


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    #: The plugin's name (its entry-point name).
    name: str
    #: Where it came from, e.g. ``"entry point appd-audit:audit"``.
    source: str
    #: The error in one line, e.g. ``"ImportError: No module named 'requests'"``.
    error: str
    #: The formatted traceback of the error.
    traceback: str


class AppdPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers where each plugin came from and what failed."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        #: Plugins that failed to load or register, in the order they were tried.
        self.failures: list[PluginFailure] = []
        #: Plugin name -> where it came from ("builtin", "entry point dist:name", ...).
        self.sources: dict[str, str] = {}
        #: Names blocked through :data:`DISABLE_ENV`.
        self.disabled: tuple[str, ...] = ()
        #: Entry-point names of the plugins not loaded because :data:`DISABLE_ENV` names them
        #: (by entry-point or distribution name).
        self.disabled_entry_points: list[str] = []


def _disabled_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = environ.get(DISABLE_ENV, "")
    return tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _unspecified_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hooks that ``plugin`` implements (not marked optional) but that have no specification."""
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                unknown.append(caller.name)
    return unknown


def _register_third_party(pm: AppdPluginManager, plugin: object, name: str, source: str) -> None:
    """Register ``plugin``; on any failure record it, log it and leave the manager unchanged."""
    try:
        pm.register(plugin, name=name)
        unknown = _unspecified_hooks(pm, plugin)
        if unknown:
            pm.unregister(plugin)
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {', '.join(unknown)} (no such hook in appd.hookspecs)"
            )
    except Exception as exc:
        _record_failure(pm, name, source, exc)
        return
    pm.sources[name] = source
    _log.debug("plugin loaded", plugin=name, source=source)


def _record_failure(pm: AppdPluginManager, name: str, source: str, exc: BaseException) -> None:
    failure = PluginFailure(
        name=name,
        source=source,
        error=_one_line(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
    pm.failures.append(failure)
    _log.error(
        "plugin failed to load, skipped",
        plugin=name,
        source=source,
        error=failure.error,
        traceback=failure.traceback,
    )


def _load_entry_points(pm: AppdPluginManager) -> None:
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist is not None else None
        source = f"entry point {dist_name}:{ep.name}" if dist_name else f"entry point {ep.name}"
        if ep.name in pm.disabled or (dist_name is not None and dist_name in pm.disabled):
            _log.info("plugin disabled", plugin=ep.name, source=source, env=DISABLE_ENV)
            pm.disabled_entry_points.append(ep.name)
            continue
        if pm.has_plugin(ep.name):
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except Exception as exc:
            _record_failure(pm, ep.name, source, exc)
            continue
        _register_third_party(pm, plugin, ep.name, source)


def _safe(value: object) -> object:
    """A log-safe stand-in for a hook argument or result: never the content of a mapping."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, type) or getattr(value, "__appd_service__", False) is True:
        return repr(value)
    if isinstance(value, str) and len(value) <= 80:
        return value
    if isinstance(value, list) and all(isinstance(item, type) for item in value):
        return [repr(item) for item in value]
    return f"<{type(value).__name__}>"


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        _log.info(
            "hook call",
            hook=hook_name,
            plugins=[impl.plugin_name for impl in impls],
            kwargs={key: _safe(value) for key, value in kwargs.items()},
        )

    def after(
        outcome: pluggy.Result[Any],
        hook_name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        if outcome.exception is not None:
            _log.info("hook raised", hook=hook_name, error=_one_line(outcome.exception))
        else:
            _log.info("hook returned", hook=hook_name, result=_safe(outcome.get_result()))

    pm.add_hookcall_monitoring(before, after)


def get_plugin_manager(
    *,
    plugins: Iterable[object] = (),
    entry_points: bool = True,
    environ: Mapping[str, str] | None = None,
) -> AppdPluginManager:
    """Build a plugin manager: specs, builtins, ``plugins``, entry points, then checks.

    :param plugins: further plugin objects (modules or instances) to register after the
        builtins; they are appd's or the caller's own, so a failure among them raises.
    :param entry_points: load the ``appd.plugins`` entry-point group (tests may turn it off).
    :param environ: where to read :data:`DISABLE_ENV` and :data:`TRACE_ENV` (``os.environ``).
    """
    env = os.environ if environ is None else environ
    pm = AppdPluginManager()
    pm.add_hookspecs(hookspecs)
    pm.disabled = _disabled_names(env)
    if env.get(TRACE_ENV, "").strip() not in ("", "0"):
        _enable_tracing(pm)
    for module_name in ESSENTIAL_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        pm.sources[module_name] = "builtin"
    for module_name in DEFAULT_PLUGINS:
        if module_name not in pm.disabled:
            pm.register(importlib.import_module(module_name), name=module_name)
            pm.sources[module_name] = "builtin"
    for plugin in plugins:
        name = pm.register(plugin)
        if name is not None:
            pm.sources[name] = "registered by the caller"
    if entry_points:
        _load_entry_points(pm)
    pm.check_pending()
    return pm


@contextlib.contextmanager
def _failure_logged(
    hook_name: str, *, passing: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Log an exception a notification hook raised, and carry on (``passing`` ones go on)."""
    try:
        yield
    except passing:
        raise
    except Exception as exc:
        _log.error("hook failed", hook=hook_name, error=_one_line(exc), exc_info=exc)


class Hooks:
    """Typed calls of every hook appd's core fires: one method per hook.

    Methods are named after the hooks and take the hooks' keyword arguments.  Lifecycle
    notifications (``appd_pre_fork``, ``appd_post_fork``, ``appd_service_ready``,
    ``appd_crash``, ``appd_quit``, ``appd_configure``, ``appd_add_commands``) log a plugin's
    exception and carry on, so a broken plugin never stops a service; :meth:`appd_request`
    and :meth:`appd_services` let errors through to the caller, which reports them.
    """

    def __init__(self, pm: AppdPluginManager) -> None:
        self.pm: Final = pm

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        with _failure_logged(hook_name):
            getattr(self.pm.hook, hook_name)(**kwargs)

    def appd_configure(self, *, config: Any) -> None:
        """Fire ``appd_configure``; plugins registered later are called too (historic).

        :param config: the loaded configuration, handed to every plugin.
        :raises ConfigurationError: a plugin refused its settings (a bad ``[systemd]`` table,
            say): that is the configuration's error, never logged and ignored.  Any other
            exception is logged and the others carry on.
        """
        with _failure_logged("appd_configure", passing=(ConfigurationError,)):
            self.pm.hook.appd_configure.call_historic(kwargs={"config": config})

    def appd_services(self) -> list[tuple[str, list[type[Service] | ModuleType]]]:
        """Collect ``appd_services`` per plugin: ``(plugin name, classes)`` pairs.

        Each implementation is called on its own so that every class can be traced to the
        plugin that contributed it.

        :raises DiscoveryError: an implementation raised or returned something not a list.
        """
        contributions: list[tuple[str, list[type[Service] | ModuleType]]] = []
        for impl in reversed(self.pm.hook.appd_services.get_hookimpls()):
            if impl.wrapper or impl.hookwrapper:
                continue
            try:
                result = impl.function()
            except DiscoveryError:
                raise
            except Exception as exc:
                raise DiscoveryError(
                    f"appd_services of plugin {impl.plugin_name!r} raised {_one_line(exc)}"
                ) from exc
            if result is None:
                continue
            if not isinstance(result, list | tuple):
                raise DiscoveryError(
                    f"appd_services of plugin {impl.plugin_name!r} returned "
                    f"{type(result).__name__}, not a list of service classes"
                )
            if result:
                contributions.append((impl.plugin_name, list(result)))
        return contributions

    def appd_pre_fork(self, *, service: Service, worker: int) -> None:
        """Fire ``appd_pre_fork`` in the supervisor before starting process ``worker``."""
        self._notify("appd_pre_fork", service=service, worker=worker)

    def appd_post_fork(self, *, service: Service, worker: int) -> None:
        """Fire ``appd_post_fork`` in the new process, before ``service.setup()``."""
        self._notify("appd_post_fork", service=service, worker=worker)

    def appd_service_ready(self, *, service: Service, worker: int) -> None:
        """Fire ``appd_service_ready`` once the service accepts requests or runs."""
        self._notify("appd_service_ready", service=service, worker=worker)

    def appd_crash(
        self,
        *,
        service: Service,
        worker: int,
        exitcode: int | None,
        signal: int | None,
        restarts: int,
        will_restart: bool,
    ) -> None:
        """Fire ``appd_crash`` in the supervisor after a service process ended unasked."""
        self._notify(
            "appd_crash",
            service=service,
            worker=worker,
            exitcode=exitcode,
            signal=signal,
            restarts=restarts,
            will_restart=will_restart,
        )

    def appd_quit(self, *, reason: str) -> None:
        """Fire ``appd_quit`` (in the supervisor, and in each service process on quit)."""
        self._notify("appd_quit", reason=reason)

    def appd_listener(self, *, service: Service) -> socket.socket | None:
        """A listening socket a plugin gives ``service`` (socket activation), or ``None``.

        Errors go through: a plugin that fails to hand over a socket fails the start.
        """
        result = self.pm.hook.appd_listener(service=service)
        return result  # type: ignore[no-any-return]

    def appd_addresses(self) -> list[tuple[str, str]]:
        """Every ``(owner, address)`` plugins listen on besides the services (a plugin that
        fails is logged and skipped: a check goes on without it)."""
        found: list[tuple[str, str]] = []
        with _failure_logged("appd_addresses"):
            for pairs in self.pm.hook.appd_addresses():
                found.extend((str(owner), str(address)) for owner, address in pairs or ())
        return found

    def appd_status(self, *, status: Mapping[str, Any]) -> None:
        """Fire ``appd_status`` in the supervisor with the status it just wrote."""
        self._notify("appd_status", status=status)

    def appd_reload(self, *, phase: str) -> None:
        """Fire ``appd_reload`` (``"begin"`` / ``"end"``) in the supervisor."""
        self._notify("appd_reload", phase=phase)

    def appd_request(self, *, service: Any, request: Request) -> RequestReply:
        """Serve one ``request`` through ``appd_request``: plugins' wrappers around the
        service's dispatch.  A server calls the pipeline that
        :func:`appd.hooks.pipeline.build_pipeline` built once instead; this is for one-off
        calls (tests, tools).

        :raises AppdError: no implementation answered (the builtin one was removed).
        Exceptions from the handler or from a plugin refusing the request propagate.
        """
        result = self.pm.hook.appd_request(service=service, request=request)
        if result is None:
            raise AppdError("no appd_request implementation answered the request")
        return result  # type: ignore[no-any-return]

    def appd_add_commands(
        self, *, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        """Fire ``appd_add_commands`` so plugins add their subcommands."""
        self._notify("appd_add_commands", subparsers=subparsers)


#: The facade under the name the supervisor knows it by.
PluginHooks = Hooks


def load_hooks(
    *,
    plugins: Iterable[object] = (),
    entry_points: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Hooks:
    """:func:`get_plugin_manager` wrapped in the :class:`Hooks` facade (same arguments)."""
    return Hooks(get_plugin_manager(plugins=plugins, entry_points=entry_points, environ=environ))


def import_plugin(spec: str, source: str | None) -> object:
    """The plugin a configuration's ``plugins`` entry names: a module, or ``module:attr``.

    :param source: the configuration's source, named in the error.
    :raises ConfigurationError: it cannot be imported (or has no such attribute).
    """
    module_name, _, attribute = spec.partition(":")
    try:
        plugin: object = importlib.import_module(module_name)
        for part in filter(None, attribute.split(".")):
            plugin = getattr(plugin, part)
    except Exception as exc:
        raise ConfigurationError(
            f"{source or 'configuration'}: plugins: cannot load {spec!r}: {_one_line(exc)}"
        ) from exc
    return plugin


def configured_hooks(raw: RawConfig | None = None, *, plugins: Iterable[object] = ()) -> Hooks:
    """The plugins of one invocation: builtins, ``plugins``, the configuration's ``plugins``
    setting, then the installed entry points.

    :param raw: the configuration as read (default: the one :func:`appd.config.read_config`
        finds from the working directory and ``APPD_CONFIG``).  Its directory is put on
        ``sys.path`` first, so a plugin module beside the configuration file imports.
    :raises ConfigurationError: the configuration cannot be read, or a configured plugin
        cannot be imported.
    """
    if raw is None:
        raw = read_config()
    chosen = list(plugins)
    specs = raw.plugin_modules()
    if specs and str(raw.base_dir) not in sys.path:
        # Plugins beside the configuration import as its services do, whatever the working
        # directory and however appd was started (console script or ``python -m appd``).
        sys.path.insert(0, str(raw.base_dir))
    for spec in specs:
        plugin = import_plugin(spec, raw.source)
        if not any(plugin is known for known in chosen):
            chosen.append(plugin)
    return load_hooks(plugins=chosen)
