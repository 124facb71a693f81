"""Configuration: where it is found, what it may say, and how secrets are referenced.

appd reads one configuration, the first of:

1. the file given with ``--config PATH``;
2. the file named by the ``APPD_CONFIG`` environment variable;
3. ``appd.toml`` in the working directory;
4. the ``[tool.appd]`` table of ``pyproject.toml`` in the working directory;
5. nothing: every default (Django sites pass ``settings.APPD`` instead).

Global settings sit at the top level; ``[services.<name>]`` tables override the service class's
own attributes for that service; ``[capacities.<name>]`` tables declare named capacities (at
most ``limit`` holders of a resource across processes and hosts).  Any string value in a
service table, and a capacity's ``backend``, may be a reference: ``env:NAME`` (the environment
variable ``NAME``) or ``file:PATH`` (the file's contents, stripped of surrounding whitespace),
so keys and passwords need not be written in the file.  Every
setting is described in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from appd.errors import ConfigurationError
from appd.logging import LOG_LEVEL_ENV_VAR, get_logger
from appd.runtime.restart import RestartPolicy

__all__ = [
    "CONFIG_ENV_VAR",
    "AppdConfig",
    "CapacityConfig",
    "ServiceConfig",
    "RawConfig",
    "SettingsReader",
    "find_config_file",
    "finish_config",
    "load_config",
    "parse_config",
    "read_config",
    "redact_url",
    "resolve_secret",
]

#: The environment variable that names the configuration file.
CONFIG_ENV_VAR: Final = "APPD_CONFIG"

#: Service settings whose values are secrets: never logged, warned about when written literally.
SECRET_SETTINGS: Final = frozenset({"key", "password", "users"})

#: Per-service settings that belong to the supervisor rather than to the service class.
SUPERVISOR_SETTINGS: Final = frozenset(
    {
        "processes",
        "enabled",
        "restart_interval",
        "restart_max_interval",
        "restart_backoff",
        "restart_healthy_after",
        "restart_max",
        "restart_window",
        "stop_grace",
    }
)

#: URL schemes a capacity's ``backend`` may use besides ``"local"`` (all served by redis-py).
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")

_LOG_FORMATS: Final = ("auto", "json", "console")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


def _log_level_override() -> str | None:
    """``APPD_LOG_LEVEL``, when set (checked like the ``log_level`` setting)."""
    level = os.environ.get(LOG_LEVEL_ENV_VAR, "").strip().lower()
    if not level:
        return None
    if level not in _LOG_LEVELS:
        raise ConfigurationError(
            f"{LOG_LEVEL_ENV_VAR}: expected one of {', '.join(_LOG_LEVELS)}, got {level!r}"
        )
    return level

_log = get_logger("appd.config")


@dataclass(frozen=True)
class ServiceConfig:
    """What the configuration says about one service.

    :ivar name: the service's name (its ``[services.<name>]`` table).
    :ivar processes: how many processes serve it; socket services share one listening socket.
    :ivar enabled: False leaves the service out of ``appd run``.
    :ivar restart: when and how often a crashed process is restarted (``restart_*`` keys).
    :ivar stop_grace: seconds a stopping process gets to finish before SIGKILL (``None``: the
        global ``shutdown_grace``).
    :ivar settings: everything else: values overriding the class's own attributes.
    """

    name: str
    processes: int = 1
    enabled: bool = True
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CapacityConfig:
    """A named capacity: at most ``limit`` holders at once, wherever they run.

    :ivar name: the capacity's name (its ``[capacities.<name>]`` table).
    :ivar limit: holders allowed at once.
    :ivar backend: ``"local"`` (slot files in :attr:`directory`, one host) or a Redis URL
        (``redis://``, ``rediss://``, ``unix://``), references already resolved.  It may hold a
        password, so it is left out of the repr: show :attr:`backend_label` instead.
    :ivar lease_ttl: seconds a lease lives unless renewed (renewal runs every third of it).
    :ivar acquire_timeout: seconds ``acquire()`` waits by default before ``CapacityTimeout``.
    :ivar directory: where the local backend keeps its slot files (every process using the
        same directory shares the limit); by default ``capacities`` inside ``run_dir``.
    """

    name: str
    limit: int
    backend: str = field(default="local", repr=False)
    lease_ttl: float = 10.0
    acquire_timeout: float = 5.0
    directory: Path = Path("capacities")

    @property
    def is_local(self) -> bool:
        """True for the local (slot file) backend."""
        return self.backend == "local"

    @property
    def backend_label(self) -> str:
        """The backend as it may be shown in logs and status: a URL without its password."""
        return "local" if self.is_local else redact_url(self.backend)


@dataclass(frozen=True)
class AppdConfig:
    """The whole configuration, validated, with paths made absolute.

    :ivar source: where it came from (a file path, ``settings.APPD``, or ``None``: defaults).
    :ivar pid_file: the supervisor's pid file for ``appd start``/``stop``/``status``.
    :ivar log_file: where a daemonized supervisor and its services write their logs.
    :ivar log_format: ``auto`` (JSON unless on a terminal), ``json`` or ``console``.
    :ivar log_level: the lowest level logged.
    :ivar run_dir: the supervisor's working directory (so its services' too), and the directory
        relative ``pid_file`` and ``log_file`` paths are taken from.
    :ivar enabled: names of the services to run (``None``: every discovered service).
    :ivar modules: modules whose service classes are added to discovery.
    :ivar paths: directories whose ``services.py`` (or ``*/services.py``) files are discovered.
    :ivar shutdown_grace: seconds in-flight requests get to finish on stop before SIGKILL.
    :ivar services: per-service tables by name.
    :ivar plugins: modules (or ``module:attribute``) registered as plugins besides entry points.
    :ivar capacities: named capacities by name (``[capacities.<name>]`` tables).
    :ivar extra: top-level settings added by ``appd_configure`` plugins, for their own use.
    """

    source: str | None = None
    pid_file: Path = Path("appd.pid")
    log_file: Path = Path("appd.log")
    log_format: str = "auto"
    log_level: str = "info"
    run_dir: Path = Path(".")
    enabled: tuple[str, ...] | None = None
    modules: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    shutdown_grace: float = 10.0
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    capacities: Mapping[str, CapacityConfig] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> ServiceConfig:
        """The table for ``name``, or the defaults when the configuration has none."""
        return self.services.get(name) or ServiceConfig(name=name)


def resolve_secret(value: str, *, where: str) -> str:
    """Return ``value``, or what an ``env:NAME`` / ``file:PATH`` reference points at.

    :param where: names the setting in error messages (``"appd.toml: services.power.key"``).
    """
    if value.startswith("env:"):
        var = value[4:]
        if var not in os.environ:
            raise ConfigurationError(f"{where}: environment variable {var!r} is not set")
        return os.environ[var]
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{where}: cannot read {str(path)!r}: {exc.strerror}"
            ) from None
    return value


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs, errors and status."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    # A lone user part may be a password written the short way: hidden too.
    user = f"{parts.username}:" if password is not None and parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, str] | None:
    """Locate the configuration: ``(path, table)`` where table is "" or "tool.appd", or None."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(f"{path}: configuration file not found")
        return path, ("tool.appd" if path.name == "pyproject.toml" else "")
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigurationError(f"{path}: configuration file not found ({CONFIG_ENV_VAR})")
        return path, ("tool.appd" if path.name == "pyproject.toml" else "")
    if Path("appd.toml").is_file():
        return Path("appd.toml"), ""
    pyproject = Path("pyproject.toml")
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None
        if isinstance(data.get("tool"), dict) and "appd" in data["tool"]:
            return pyproject, "tool.appd"
    return None


@dataclass
class RawConfig:
    """A configuration as read, before validation: what ``appd_configure`` plugins may adjust.

    :ivar data: the settings table (mutable: plugins may change it).
    :ivar source: where it came from, for error messages (``None``: no file).
    :ivar base_dir: the directory relative paths are taken from.
    """

    data: dict[str, Any]
    source: str | None
    base_dir: Path

    def plugin_modules(self) -> tuple[str, ...]:
        """The ``plugins`` setting: modules (or ``module:attribute``) to register as plugins."""
        return SettingsReader(self.data, source=self.source or "configuration", prefix="").strings(
            "plugins"
        ) or ()


def read_config(explicit: str | os.PathLike[str] | None = None) -> RawConfig:
    """Find and read the configuration (see the module docstring for the order)."""
    found = find_config_file(explicit)
    if found is None:
        return RawConfig({}, None, Path.cwd())
    path, table = found
    try:
        data: Any = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from None
    source = str(path)
    if table:
        data = data.get("tool", {}).get("appd", {})
        source = f"{path} [tool.appd]"
    _warn_if_secrets_readable(path, data)
    return RawConfig(data, source, path.resolve().parent)


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    configure: Callable[[dict[str, Any]], None] | None = None,
) -> AppdConfig:
    """Find, read, let plugins adjust (``configure``), and validate the configuration.

    :param configure: called with the settings table before validation (appd passes the
        ``appd_configure`` hook); top-level keys it adds are kept in :attr:`AppdConfig.extra`.
    """
    return finish_config(read_config(explicit), configure=configure)


def finish_config(
    raw: RawConfig,
    *,
    configure: Callable[[dict[str, Any]], None] | None = None,
    disabled_plugins: Collection[str] = (),
    secrets: bool = True,
) -> AppdConfig:
    """Run ``configure`` over ``raw`` and validate the result.

    :param configure: the ``appd_configure`` hook; a :class:`ConfigurationError` it raises (a
        plugin refusing its own table) is the configuration's error, prefixed with its source.
    :param disabled_plugins: names of plugins turned off (``APPD_DISABLE_PLUGINS``): a
        top-level table named after one of them is that plugin's own settings, and is left out
        rather than rejected, so turning a plugin off needs no edit of the configuration.
    :param secrets: resolve the secret settings' references (see :func:`parse_config`).
    """
    before = set(raw.data)
    if configure is not None:
        try:
            configure(raw.data)
        except ConfigurationError as exc:
            # A plugin refused its own settings: one error naming the file, like any other.
            label = raw.source or "configuration"
            message = str(exc)
            raise ConfigurationError(
                message if message.startswith(label) else f"{label}: {message}"
            ) from None
    for name in disabled_plugins:
        if name in raw.data and name not in _GLOBAL_KEYS:
            del raw.data[name]
            _log.info("settings of a disabled plugin ignored", table=name)
    added = set(raw.data) - before - _GLOBAL_KEYS
    return parse_config(
        raw.data, source=raw.source, base_dir=raw.base_dir, extra_keys=added, secrets=secrets
    )


def _warn_if_secrets_readable(path: Path, data: Mapping[str, Any]) -> None:
    literal = [
        f"services.{name}.{key}"
        for name, table in (data.get("services") or {}).items()
        if isinstance(table, Mapping)
        for key, value in table.items()
        if key in SECRET_SETTINGS and _holds_literal(value)
    ]
    if not literal:
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _log.warning(
            "configuration file readable by others holds literal secrets",
            path=str(path),
            settings=literal,
            mode=oct(stat.S_IMODE(mode)),
            hint="chmod 600 the file, or write the secrets as env:NAME or file:PATH",
        )


def _holds_literal(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("env:", "file:"))
    if isinstance(value, Mapping):
        return any(_holds_literal(v) for v in value.values())
    return value is not None


class SettingsReader:
    """Typed access to one table of settings, raising one-line errors that name where each
    value came from, the key and the problem (``appd.toml: services.power.concurrency:
    expected a positive integer, got 0``).

    Every setting of appd is read through it: the global keys, the ``[services.<name>]``
    tables, and a service's settings (which merge the class's attributes with its table).

    :param data: the values.
    :param source: where they came from (a file path, ``settings.APPD``).
    :param prefix: prepended to each key in messages (``"services.power."``).
    :param origins: per key, a label used instead of ``source`` + ``prefix`` (a value taken
        from a class attribute is named ``shop.services.PowerService.concurrency``).
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        source: str,
        prefix: str,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self.origins = origins or {}

    def where(self, key: str) -> str:
        origin = self.origins.get(key)
        return origin if origin is not None else f"{self.source}: {self.prefix}{key}"

    def fail(self, key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{self.where(key)}: {problem}")

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {_shown(value)}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum:g}, got {value!r}")
        return float(value)

    def seconds(
        self, key: str, default: float | None, *, optional: bool = False, positive: bool = True
    ) -> float | None:
        """A duration in seconds: a positive number (or zero when not ``positive``), or
        ``None`` when ``optional``."""
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        if not ok or value < 0 or (positive and value == 0):
            kind = "a positive number of seconds" if positive else "a number of seconds >= 0"
            raise self.fail(
                key, f"expected {kind}{' or none' if optional else ''}, got {value!r}"
            )
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_shown(value)}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value!r}")
        return value

    def positive_integer(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"expected a positive integer, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_shown(value)}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or value.lower() not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {_shown(value)}")
        return value.lower()

    def string(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_shown(value)}")
        return value

    def optional_string(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_shown(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"expected a list of strings, got {_shown(value)}")
        return tuple(value)


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


_GLOBAL_KEYS: Final = frozenset(
    {
        "pid_file",
        "log_file",
        "log_format",
        "log_level",
        "run_dir",
        "enabled",
        "modules",
        "paths",
        "shutdown_grace",
        "services",
        "plugins",
        "capacities",
    }
)


def parse_config(
    data: Mapping[str, Any],
    *,
    source: str | None,
    base_dir: Path,
    extra_keys: Collection[str] = (),
    secrets: bool = True,
) -> AppdConfig:
    """Validate a configuration mapping (a TOML table or ``settings.APPD``).

    Relative paths are taken relative to ``base_dir`` (the configuration file's directory).

    :param secrets: False for commands that use no secret (``appd list``, ``status``, ``stop``,
        ``plugins``): the secret settings (``key``, ``password``, ``users``) keep their
        ``env:``/``file:`` references unread, and any other reference that cannot be resolved
        is kept as written instead of being an error.

    :raises ConfigurationError: naming the source, the key and what is wrong.
    """
    label = source or "configuration"
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{label}: expected a table of settings, got {_shown(data)}")
    top = SettingsReader(data, source=label, prefix="")
    unknown = sorted(set(data) - _GLOBAL_KEYS - set(extra_keys))
    if unknown:
        raise top.fail(
            unknown[0], f"unknown setting (known: {', '.join(sorted(_GLOBAL_KEYS))})"
        )

    run_dir = (base_dir / top.string("run_dir", ".")).resolve()

    def path_of(key: str, default: str) -> Path:
        return (run_dir / top.string(key, default)).resolve()

    services_table = data.get("services", {})
    if not isinstance(services_table, Mapping):
        raise top.fail(
            "services", f"expected a table of service tables, got {_shown(services_table)}"
        )
    services = {
        name: _parse_service(name, table, source=label, secrets=secrets)
        for name, table in services_table.items()
    }
    capacities_table = data.get("capacities", {})
    if not isinstance(capacities_table, Mapping):
        raise top.fail(
            "capacities", f"expected a table of capacity tables, got {_shown(capacities_table)}"
        )
    capacities = {
        name: _parse_capacity(name, table, source=label, run_dir=run_dir, secrets=secrets)
        for name, table in capacities_table.items()
    }
    paths = top.strings("paths") or ()
    return AppdConfig(
        source=source,
        pid_file=path_of("pid_file", "appd.pid"),
        log_file=path_of("log_file", "appd.log"),
        log_format=top.choice("log_format", "auto", _LOG_FORMATS),
        log_level=_log_level_override() or top.choice("log_level", "info", _LOG_LEVELS),
        run_dir=run_dir,
        enabled=top.strings("enabled"),
        modules=top.strings("modules") or (),
        paths=tuple((base_dir / p).resolve() for p in paths),
        shutdown_grace=top.number("shutdown_grace", 10.0),
        services=services,
        plugins=top.strings("plugins") or (),
        capacities=capacities,
        extra={key: data[key] for key in extra_keys},
    )


def _parse_service(name: str, table: Any, *, source: str, secrets: bool) -> ServiceConfig:
    prefix = f"services.{name}."
    if not isinstance(table, Mapping):
        raise ConfigurationError(
            f"{source}: services.{name}: expected a table of settings, got {_shown(table)}"
        )
    reader = SettingsReader(table, source=source, prefix=prefix)
    settings = {
        key: _resolve_references(value, where=reader.where(key))
        if secrets
        else _resolve_if_possible(key, value, where=reader.where(key))
        for key, value in table.items()
        if key not in SUPERVISOR_SETTINGS
    }
    stop_grace = table.get("stop_grace")
    return ServiceConfig(
        name=name,
        processes=reader.integer("processes", 1, minimum=1),
        enabled=reader.boolean("enabled", True),
        restart=_parse_restart(reader),
        stop_grace=None if stop_grace is None else reader.number("stop_grace", 0.0),
        settings=settings,
    )


_CAPACITY_KEYS: Final = ("limit", "backend", "lease_ttl", "acquire_timeout", "directory")
#: Capacity names become file and key names: keep them to a safe alphabet.
_CAPACITY_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
)


def _parse_capacity(
    name: str, table: Any, *, source: str, run_dir: Path, secrets: bool = True
) -> CapacityConfig:
    prefix = f"capacities.{name}."
    if not name or not set(name) <= _CAPACITY_NAME_CHARS or name.startswith("."):
        raise ConfigurationError(
            f"{source}: capacities.{name}: a capacity name may hold only letters, digits, "
            "'_', '-' and '.' (not first)"
        )
    if not isinstance(table, Mapping):
        raise ConfigurationError(
            f"{source}: capacities.{name}: expected a table of settings, got {_shown(table)}"
        )
    reader = SettingsReader(table, source=source, prefix=prefix)
    unknown = sorted(set(table) - set(_CAPACITY_KEYS))
    if unknown:
        raise reader.fail(unknown[0], f"unknown setting (known: {', '.join(_CAPACITY_KEYS)})")
    if "limit" not in table:
        raise reader.fail("limit", "missing: how many holders the capacity allows at once")
    written = reader.string("backend", "local")
    unread = False
    try:
        backend = resolve_secret(written, where=reader.where("backend"))
    except ConfigurationError:
        if secrets:
            raise
        # A command that needs no secret: asking this backend reports it unavailable.
        backend, unread = written, True
    if backend != "local" and not unread:
        scheme = backend.partition(":")[0].lower()
        if scheme not in REDIS_SCHEMES or "://" not in backend:
            # The value may be a secret (a URL with a password, an env: reference): never shown.
            raise reader.fail(
                "backend", 'expected "local" or a redis://, rediss:// or unix:// URL'
            )
    lease_ttl = reader.number("lease_ttl", 10.0)
    if lease_ttl < 0.1:
        raise reader.fail("lease_ttl", f"must be at least 0.1 seconds, got {lease_ttl:g}")
    return CapacityConfig(
        name=name,
        limit=reader.integer("limit", 1, minimum=1),
        backend=backend,
        lease_ttl=lease_ttl,
        acquire_timeout=reader.number("acquire_timeout", 5.0),
        directory=(run_dir / reader.string("directory", "capacities")).resolve(),
    )


def _parse_restart(reader: SettingsReader) -> RestartPolicy:
    default = RestartPolicy()
    interval = reader.number("restart_interval", default.interval)
    max_interval = reader.number("restart_max_interval", max(default.max_interval, interval))
    if max_interval < interval:
        raise reader.fail(
            "restart_max_interval", f"must not be below restart_interval ({interval:g})"
        )
    return RestartPolicy(
        interval=interval,
        max_interval=max_interval,
        backoff=reader.number("restart_backoff", default.backoff, minimum=1.0),
        healthy_after=reader.number("restart_healthy_after", default.healthy_after),
        max_restarts=reader.integer("restart_max", default.max_restarts),
        window=reader.number("restart_window", default.window),
    )


def _resolve_if_possible(key: str, value: Any, *, where: str) -> Any:
    """A setting's value for a command that needs no secret: secrets unread, the rest resolved
    where their references can be."""
    if key in SECRET_SETTINGS:
        return value
    try:
        return _resolve_references(value, where=where)
    except ConfigurationError:
        return value


def _resolve_references(value: Any, *, where: str) -> Any:
    if isinstance(value, str):
        return resolve_secret(value, where=where)
    if isinstance(value, Mapping):
        return {k: _resolve_references(v, where=f"{where}.{k}") for k, v in value.items()}
    return value
