"""The ``[prometheus]`` table: where the supervisor serves metrics, and where processes write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from appd import ConfigurationError

__all__ = ["DEFAULT_PORT", "SETTINGS_TABLE", "PrometheusSettings"]

#: The configuration table this plugin reads (and takes out of the settings).
SETTINGS_TABLE: Final = "prometheus"

#: The port served when the table names none.
DEFAULT_PORT: Final = 9464

_KNOWN: Final = ("directory", "host", "port")


@dataclass(frozen=True)
class PrometheusSettings:
    """What ``[prometheus]`` says.

    :ivar host: the interface the metrics endpoint listens on.
    :ivar port: its TCP port (``0``: any free one, logged).
    :ivar directory: where service processes write their metrics files; the supervisor creates
        it and empties it at start and at exit (``None``: a fresh temporary directory, removed
        at exit).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    directory: Path | None = None

    @classmethod
    def from_table(cls, table: Any, *, base_dir: Path | None = None) -> PrometheusSettings:
        """Validate the table; :class:`appd.ConfigurationError` names a wrong key."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{SETTINGS_TABLE}: expected a table of settings")
        unknown = sorted(set(table) - set(_KNOWN))
        if unknown:
            raise ConfigurationError(
                f"{SETTINGS_TABLE}.{unknown[0]}: unknown setting (known: {', '.join(_KNOWN)})"
            )
        host = table.get("host", cls.host)
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"{SETTINGS_TABLE}.host: expected an address, not {host!r}")
        port = table.get("port", DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(
                f"{SETTINGS_TABLE}.port: expected a port number 0-65535, not {port!r}"
            )
        directory = table.get("directory")
        if directory is not None and (not isinstance(directory, str) or not directory):
            raise ConfigurationError(
                f"{SETTINGS_TABLE}.directory: expected a path, not {directory!r}"
            )
        path = None
        if directory is not None:
            path = Path(directory) if base_dir is None else base_dir / directory
        return cls(host=host, port=port, directory=path)
