"""What the ``appd`` commands do, apart from parsing arguments and printing.

Each function here puts the layers together for one command: configuration, plugins, discovery,
services with their settings applied, the supervisor, the daemon runtime and the client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from appd.capacity import Capacities, open_backend
from appd.config import AppdConfig, RawConfig, find_config_file, finish_config, read_config
from appd.discovery import DiscoveredService, discover_services
from appd.errors import AppdError, ConfigurationError
from appd.hooks import Hooks, configured_hooks
from appd.logging import configure_logging, get_logger
from appd.service import AppServiceBase

__all__ = [
    "FRAMEWORK_SOURCES",
    "ConfigSource",
    "capacity_status",
    "client_for",
    "config_source",
    "configure_logging_for",
    "daemon_main",
    "discover",
    "framework_source",
    "invocation_hooks",
    "is_enabled",
    "invocation_plugins",
    "load",
    "plugin_rows",
    "prepare_services",
    "reload_running",
    "run_supervisor",
    "service_rows",
    "start_daemonized",
]

_log = get_logger("appd")

#: Shortest key ``appd check`` accepts without a warning (bytes); appd keygen makes 32.
RECOMMENDED_KEY_BYTES = 32


@dataclass(frozen=True)
class ConfigSource:
    """Where :func:`load` takes the configuration from when no ``--config`` file is named.

    A framework integration installs one with :func:`config_source` around the command line
    (``manage.py appd`` reads ``settings.APPD`` this way).  A daemon started inside the
    ``with`` block is a fork of this process, so it keeps the same source.

    :ivar read: returns the configuration as read, or ``None`` to fall back to the usual files.
    :ivar plugins: plugin objects registered with every plugin manager :func:`load` builds.
    :ivar entry: ``"module:function"`` returning this same source, so that a service process
        (a fresh interpreter) reads the configuration the way the supervisor does.
    :ivar reread: see the attribute.
    """

    read: Callable[[], RawConfig | None]
    plugins: tuple[object, ...] = ()
    entry: str | None = None
    #: Reads the configuration anew from disk, for a reload, where :attr:`read` would return
    #: what this process read before (a framework's settings imported once); None: ``read``.
    reread: Callable[[], RawConfig | None] | None = None


_source: ConfigSource | None = None

#: Functions (``module:function``) that recognise a framework's project in the working
#: directory and return its :class:`ConfigSource`, or None: how the plain ``appd`` command
#: reads ``settings.APPD`` beside a Django project's ``manage.py``.
FRAMEWORK_SOURCES: Final = ("appd.contrib.django.config:project_config_source",)


def framework_source() -> ConfigSource | None:
    """The source of the framework project in the working directory, if any (None, too, when
    a source is installed already: ``manage.py appd`` chose its own).

    A framework that is not installed is skipped; nothing of it is imported otherwise.
    """
    if _source is not None:
        return None
    for spec in FRAMEWORK_SOURCES:
        module_name, _, attribute = spec.partition(":")
        try:
            find: Callable[[], ConfigSource | None] = getattr(
                importlib.import_module(module_name), attribute
            )
        except ImportError:
            continue
        found = find()
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def config_source(source: ConfigSource) -> Iterator[None]:
    """Make :func:`load` use ``source`` inside the ``with`` block (and in daemons it forks)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


def _read_raw(config_path: str | None, source: ConfigSource | None) -> RawConfig:
    raw = None if source is None or config_path is not None else source.read()
    return raw if raw is not None else read_config(config_path)


def invocation_hooks(config_path: str | None) -> Hooks | None:
    """The one plugin manager of a command-line invocation, built before its arguments are
    parsed so that plugins named in the configuration's ``plugins`` add subcommands too.

    :returns: ``None`` when the configuration cannot be read or a configured plugin cannot be
        imported: the command then reports that error when it loads the configuration.
    """
    return invocation_plugins(config_path)[0]


def invocation_plugins(config_path: str | None) -> tuple[Hooks | None, ConfigurationError | None]:
    """:func:`invocation_hooks`, and the error that kept the configuration's plugins out (so
    ``appd --help`` and an unknown command can say why a plugin's subcommand is missing)."""
    source = _source
    try:
        raw = _read_raw(config_path, source)
        return configured_hooks(raw, plugins=source.plugins if source is not None else ()), None
    except ConfigurationError as exc:
        return None, exc


def load(
    config_path: str | None,
    *,
    source: ConfigSource | None = None,
    hooks: Hooks | None = None,
    secrets: bool = True,
) -> tuple[AppdConfig, Hooks]:
    """Read the configuration, build the plugin manager (entry points and the configuration's
    ``plugins``), let ``appd_configure`` adjust the settings, and validate them.

    :param source: where the configuration comes from when ``config_path`` is None, and
        plugins to register (default: the one :func:`config_source` installed, if any).
    :param hooks: the invocation's plugin manager, when :func:`invocation_hooks` built it
        already (one per invocation); built here otherwise.
    :param secrets: False for commands that use no secret: ``env:``/``file:`` references of
        secret settings are left unread (see :func:`appd.config.parse_config`).
    """
    source = source if source is not None else _source
    raw = _read_raw(config_path, source)
    if hooks is None:
        hooks = configured_hooks(raw, plugins=source.plugins if source is not None else ())
    config = finish_config(
        raw,
        configure=lambda data: hooks.appd_configure(config=data),
        disabled_plugins={*hooks.pm.disabled, *hooks.pm.disabled_entry_points},
        secrets=secrets,
    )
    return config, hooks


def discover(config: AppdConfig, hooks: Hooks) -> list[DiscoveredService]:
    """Every service class the configuration, the plugins and the environment provide."""
    return discover_services(
        hooks=hooks, modules=config.modules, directories=[str(p) for p in config.paths]
    )


def configure_service(service: AppServiceBase, config: AppdConfig) -> None:
    """Apply the service's ``[services.<name>]`` table and validate its settings, once.

    :raises ConfigurationError: naming the configuration (or the class) and the key.
    """
    service.configure(
        config.service(service.name).settings, source=config.source or "configuration"
    )


def check_service_tables(config: AppdConfig, found: Sequence[DiscoveredService]) -> None:
    """Every ``[services.<name>]`` table and ``enabled`` name must match a discovered service.

    :raises ConfigurationError: naming the first table (or name) that matches none.
    """
    source = config.source or "configuration"
    names = {f.name for f in found}
    unknown = set(config.enabled or ()) - names
    if unknown:
        raise ConfigurationError(
            f"{source}: enabled: no such service: {', '.join(sorted(unknown))}"
        )
    for name in config.services:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ConfigurationError(
                f"{source}: services.{name}: no service named {name!r} was discovered "
                f"(discovered: {known})"
            )


def prepare_services(
    config: AppdConfig, found: Sequence[DiscoveredService], *, only_enabled: bool = True
) -> list[AppServiceBase]:
    """Instantiate the services to run, each with its settings applied and validated once."""
    check_service_tables(config, found)
    services = []
    capacities = Capacities(config.capacities)  # opened lazily, in the process that uses one
    for item in found:
        if only_enabled and not is_enabled(config, item.name):
            continue
        service = item.cls()
        configure_service(service, config)
        service.capacities = capacities
        services.append(service)
    return services


def is_enabled(config: AppdConfig, name: str) -> bool:
    """Whether the configuration runs the service ``name`` (its table's ``enabled`` and the
    top-level ``enabled`` list)."""
    return config.service(name).enabled and (config.enabled is None or name in config.enabled)


def configure_logging_for(config: AppdConfig, role: str) -> None:
    """Log as the configuration says (``log_format``, ``log_level``), as ``role``."""
    renderer = None if config.log_format == "auto" else config.log_format
    configure_logging(role, renderer=renderer, level=config.log_level.upper())  # type: ignore[arg-type]


def run_supervisor(
    config: AppdConfig, hooks: Hooks, *, hold_pid_file: bool, config_path: str | None = None
) -> int:
    """``appd run``: supervise every enabled service in the foreground until SIGTERM/SIGINT.

    Service processes are started fresh (``python -m appd.cli.child``), and SIGHUP loads the
    configuration, the plugins and the services again, so a reload runs the code on disk.

    :param hold_pid_file: take the configured pid file (``appd run``); a daemon started by
        ``appd start`` already has its guardian holding it.
    :param config_path: the ``--config`` file, if one was named (read again on reload).
    """
    from appd.runtime.pidfile import PidFileLocked, take_pid_file
    from appd.supervisor import Supervisor, status_path_for, write_json_atomically
    from appd.supervisor.child import configure_process_logging

    configure_process_logging(config, None, None)
    source = _source
    # The file found now, from the working directory of now: a reload and the service
    # processes it starts read it again from the run directory.
    found = find_config_file(config_path) if config_path is not None or source is None else None
    config_file = None if found is None else str(found[0].resolve())
    status_file = status_path_for(config.pid_file)
    status_file.parent.mkdir(parents=True, exist_ok=True)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(config.run_dir)
    pid_file = None
    try:
        if hold_pid_file:
            try:
                pid_file = take_pid_file(config.pid_file)
            except PidFileLocked as exc:
                raise AppdError(
                    f"appd is already running (pid {exc.pid}, pid file {config.pid_file})"
                ) from None
            except OSError as exc:
                raise AppdError(str(exc.strerror)) from None
        services = prepare_services(config, discover(config, hooks))
        if not services:
            raise AppdError("no services to run: discovery found none that are enabled")
        reloader = _Reloader(config_file, source, services, config)
        supervisor = Supervisor(
            config,
            services,
            hooks,
            status_file=status_file,
            child_command=lambda spec: _child_command(spec, config_file, source),
            reload=reloader,
        )
        return supervisor.run()
    except AppdError as exc:
        if not hold_pid_file:
            # A daemon: its log file and the status `appd start` waits on tell why.  In the
            # foreground the command line prints the error itself, once.
            _log.error("supervisor failed to start", error=str(exc))
            write_json_atomically(status_file, {"state": "failed", "error": str(exc)})
        raise
    finally:
        if pid_file is not None:
            pid_file.release()


def _child_command(spec: Any, config_file: str | None, source: ConfigSource | None) -> list[str]:
    """``python -m appd.cli.child SPEC`` for one service process (see :mod:`appd.cli.child`)."""
    document = {
        "config": config_file,
        "source": None if source is None else source.entry,
        "sys_path": [entry or os.getcwd() for entry in sys.path],
        "service": spec.service,
        "worker": spec.worker,
        "slot": spec.slot,
        "group": spec.group,
        "scoreboard_fd": spec.scoreboard_fd,
        "listener_fd": spec.listener_fd,
    }
    return [sys.executable, "-m", "appd.cli.child", json.dumps(document)]


class _Reloader:
    """Loads the configuration, the plugins and the services again (a SIGHUP reload).

    The modules that defined services, and every module of the configured ``paths`` outside
    installed packages, are forgotten first, so they are imported anew: the supervisor's view
    of the services (and the processes it forks after a crash) follows the code on disk.
    """

    def __init__(
        self, config_file: str | None, source: ConfigSource | None,
        services: Sequence[AppServiceBase], config: AppdConfig,
    ) -> None:
        self.config_file = config_file
        # A reload reads the configuration as it is on disk now.
        self.source = (
            source if source is None or source.reread is None
            else dataclasses.replace(source, read=source.reread)
        )
        self.modules = {type(service).__module__ for service in services}
        self.paths = list(config.paths)
        self.config = config

    def _stale(self, name: str, module: Any) -> bool:
        if name == "appd" or name.startswith("appd."):
            return False
        if name in self.modules:
            return True
        filename = getattr(module, "__file__", None)
        if not filename or "-packages" in filename:
            return False
        where = Path(filename).resolve()
        return any(where.is_relative_to(path) for path in self.paths)

    def __call__(self) -> Any:
        from appd.supervisor import Plan

        for name in [n for n, m in list(sys.modules.items()) if self._stale(n, m)]:
            del sys.modules[name]
        importlib.invalidate_caches()
        config, hooks = load(self.config_file, source=self.source)
        _refuse_fixed_changes(self.config, config)
        services = prepare_services(config, discover(config, hooks))
        self.modules |= {type(service).__module__ for service in services}
        self.paths = list(config.paths)
        self.config = config
        return Plan(config, hooks, services)


#: Settings a running supervisor cannot change: where its pid, status and log files are, and
#: its working directory. A reload that changes one is refused (nothing is replaced) and says
#: which; ``appd restart`` applies it.
FIXED_SETTINGS: Final = ("run_dir", "pid_file", "log_file")


def _refuse_fixed_changes(before: AppdConfig, after: AppdConfig) -> None:
    """:raises ConfigurationError: naming the first setting in :data:`FIXED_SETTINGS` that
    ``after`` changes."""
    for name in FIXED_SETTINGS:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            raise ConfigurationError(
                f"{after.source or 'configuration'}: {name}: changed from {old} to {new}, "
                "which a reload cannot apply: the running processes keep serving; "
                "restart appd (appd restart) to apply it"
            )


def daemon_main(*, config_path: str | None) -> None:
    """The entry of the daemon ``appd start`` launches (runs in the executor process)."""
    config, hooks = load(config_path)
    code = run_supervisor(config, hooks, hold_pid_file=False, config_path=config_path)
    if code:
        raise SystemExit(code)


def start_daemonized(config: AppdConfig, *, config_path: str | None, timeout: float) -> int:
    """``appd start``: launch the supervisor as a daemon and wait for every service to be ready.

    :returns: 0 once everything is ready; 1 when it is already running or fails to come up.
    """
    from appd.runtime import DaemonRunStatus, start_daemon
    from appd.runtime.logfile import LOG_FILE_ENV_VAR
    from appd.runtime.pidfile import read_live_pid
    from appd.supervisor import read_status, status_path_for

    running = read_live_pid(config.pid_file)
    if running is not None:
        raise AppdError(f"appd is already running (pid {running}, pid file {config.pid_file})")
    status_file = status_path_for(config.pid_file)
    status_file.unlink(missing_ok=True)
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    config.pid_file.parent.mkdir(parents=True, exist_ok=True)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    # Every process of the run knows its log file, to open it again on SIGUSR1 (logrotate).
    os.environ[LOG_FILE_ENV_VAR] = str(config.log_file.resolve())
    result, pid = start_daemon(
        pid_filename=str(config.pid_file),
        daemon_entry="appd.cli.app:daemon_main",
        daemon_args={
            "config_path": None if config_path is None else str(Path(config_path).resolve())
        },
        stdout_filename=str(config.log_file),
        stderr_filename=str(config.log_file),
        grace_period=_longest_grace(config) + 5.0,
        working_directory=str(config.run_dir),
    )
    if result is DaemonRunStatus.ALREADY_RUNNING:
        raise AppdError(f"appd is already running (pid {pid}, pid file {config.pid_file})")
    if result is not DaemonRunStatus.LAUNCHED or pid is None:
        raise AppdError(f"appd failed to start; see {config.log_file}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(status_file)
        if status.get("state") == "failed":
            raise AppdError(f"appd failed to start: {status.get('error')}")
        services = status.get("services", {})
        fatal = sorted(name for name, s in services.items() if s.get("state") == "fatal")
        if fatal:
            raise AppdError(
                f"appd (pid {pid}) started, but {', '.join(fatal)} kept crashing and gave up "
                f"(FATAL); see {config.log_file} and `appd status`"
            )
        if services and all(s.get("state") == "ready" for s in services.values()):
            print(f"appd started (pid {pid}): {', '.join(sorted(services))} ready")
            return 0
        if read_live_pid(config.pid_file) is None:
            raise AppdError(f"appd exited while starting; see {config.log_file}")
        time.sleep(0.05)
    raise AppdError(
        f"appd (pid {pid}) did not report every service ready within {timeout:g}s; "
        f"see {config.log_file} and `appd status`"
    )


def reload_running(config: AppdConfig, *, timeout: float) -> int | None:
    """``appd reload``: SIGHUP to the running supervisor (through its guardian under
    ``appd start``), then wait until that reload has ended and every service is ready.

    :returns: the pid signalled, or None when appd is not running.
    :raises AppdError: the reload did not end, or left a service not ready, within ``timeout``.
    """
    import signal

    from appd.runtime.pidfile import read_live_pid
    from appd.supervisor import read_status, status_path_for

    pid = read_live_pid(config.pid_file)
    if pid is None:
        return None
    status_file = status_path_for(config.pid_file)
    earlier = read_status(status_file)
    before = earlier.get("reloads", 0)
    failures = earlier.get("reload_failures", 0)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(status_file)
        services = status.get("services", {})
        if status.get("reload_failures", 0) > failures:
            raise AppdError(
                f"appd (pid {pid}) could not reload, and its processes keep serving the code "
                f"they run: {status.get('last_reload_error')}"
            )
        if status.get("reloads", 0) > before and status.get("state") == "running":
            not_ready = sorted(n for n, s in services.items() if s.get("state") != "ready")
            if not not_ready:
                return pid
            if time.monotonic() + 0.05 >= deadline:
                raise AppdError(
                    f"appd (pid {pid}) reloaded, but {', '.join(not_ready)} is not ready; "
                    f"see `appd status` and {config.log_file}"
                )
        time.sleep(0.05)
    raise AppdError(
        f"appd (pid {pid}) did not finish reloading within {timeout:g}s; see `appd status`"
    )


def _longest_grace(config: AppdConfig) -> float:
    graces = [s.stop_grace for s in config.services.values() if s.stop_grace is not None]
    return max([config.shutdown_grace, *graces])


def _find_service(config: AppdConfig, hooks: Hooks, name: str) -> AppServiceBase:
    for service in prepare_services(config, discover(config, hooks), only_enabled=False):
        if service.name == name:
            return service
    raise AppdError(f"no service named {name!r} (see `appd list`)")


def client_for(config: AppdConfig, hooks: Hooks, name: str, *, timeout: float) -> Any:
    """A client for the socket service ``name``, with its configured address and credentials.

    From the configuration alone when its table says enough (an address, a key and a user), as
    a web worker's client is built: no service module is imported, so an unrelated app's
    broken ``services.py`` does not matter. Otherwise discovery supplies the class's own
    attributes."""
    from appd.service import SecureSocketAppClient, SecureSocketAppService

    known = _client_settings(config, name)
    if known is not None:
        host, port, path, user, secret, key = known
        return SecureSocketAppClient(host, port, user, secret, key, path=path, timeout=timeout)
    service = _find_service(config, hooks, name)
    if not isinstance(service, SecureSocketAppService):
        raise AppdError(f"service {name!r} does not serve requests (not a socket service)")
    username, password = service.username, service.password
    if username is None and service.users:
        username, password = next(iter(service.users.items()))
    if service.key is None or username is None or password is None:
        raise AppdError(f"service {name!r} has no key or no user to call it as")
    return SecureSocketAppClient(
        service.host,
        service.port,
        username,
        password,
        service.key,
        path=service.path,
        timeout=timeout,
    )


def _client_settings(
    config: AppdConfig, name: str
) -> tuple[str | None, int | None, str | None, str, str, str] | None:
    """``(host, port, path, username, password, key)`` of ``name`` from its configuration table
    alone, or None when the table leaves any of them to the class."""
    table = config.services.get(name)
    if table is None:
        return None
    values = table.settings
    path, port, key = values.get("path"), values.get("port"), values.get("key")
    username, password = values.get("username"), values.get("password")
    users = values.get("users")
    if (username is None or password is None) and isinstance(users, Mapping) and users:
        username, password = next(iter(users.items()))
    texts = (key, username, password)
    if not all(isinstance(t, str) and t for t in texts):
        return None
    if path:
        return None, None, str(path), str(username), str(password), str(key)
    if isinstance(port, bool) or not isinstance(port, int) or port <= 0:
        return None
    host = values.get("host") or "127.0.0.1"
    return str(host), port, None, str(username), str(password), str(key)


def service_rows(config: AppdConfig, hooks: Hooks) -> list[list[str]]:
    """``appd list``: name, class, source and address of every discovered service."""
    from appd.cli.listing import list_services

    settings = {name: dict(sc.settings) for name, sc in config.services.items()}
    return [
        [row.name, row.class_path, row.source, row.address or row.problem or "-"]
        for row in list_services(discover(config, hooks), settings)
    ]


def plugin_rows(hooks: Hooks) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """``appd plugins``: loaded plugins with their hooks, and plugins that failed to load."""
    from appd.cli.listing import list_plugins

    report = list_plugins(hooks.pm)
    loaded = [[p.name, p.source, ", ".join(p.hooks) or "-"] for p in report.loaded]
    failed = [(f.name, f.error) for f in report.failures]
    failed += [(name, "") for name in report.disabled]
    return loaded, failed


def capacity_status(config: AppdConfig) -> dict[str, dict[str, Any]]:
    """Each configured capacity as its backend reports it now (``appd status``): ``limit``,
    ``backend``, ``holders`` (each ``holder``, ``token``, ``expires_in``) and ``waiters``; with
    ``error`` (and null holders and waiters) when the backend cannot be asked."""
    result: dict[str, dict[str, Any]] = {}
    for name, capacity in sorted(config.capacities.items()):
        entry: dict[str, Any] = {"limit": capacity.limit, "backend": capacity.backend_label}
        try:
            backend = open_backend(capacity)
            try:
                status = backend.status().as_dict()
            finally:
                backend.close()
        except AppdError as exc:
            entry.update(holders=None, waiters=None, error=str(exc))
        else:
            entry.update(holders=status["holders"], waiters=status["waiters"])
        result[name] = entry
    return result
