"""The notification protocol of ``sd_notify(3)``: newline-separated ``KEY=VALUE`` assignments
in one datagram, sent to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``.

A name starting with ``@`` is an abstract socket (the ``@`` stands for a leading NUL byte).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Final

from appd import get_logger

__all__ = ["NOTIFY_SOCKET_ENV", "Notifier", "notify_address"]

#: The environment variable systemd sets for a ``Type=notify`` service.
NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"

_log = get_logger("appd.systemd")


def notify_address(value: str) -> str | bytes:
    """The socket address ``$NOTIFY_SOCKET`` names: a path, or an abstract name as bytes.

    :raises ValueError: for an empty value or one that is neither ``/path`` nor ``@name``.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(
        f"{NOTIFY_SOCKET_ENV} must be an absolute path or an abstract name starting with '@', "
        f"not {value!r}"
    )


class Notifier:
    """Sends notifications to one notification socket; a failed send is logged, never raised.

    :param address: what :func:`notify_address` returns.
    """

    def __init__(self, address: str | bytes) -> None:
        self.address: Final = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``; ``None`` when it is unset or malformed."""
        value = environ.get(NOTIFY_SOCKET_ENV, "")
        if not value:
            return None
        try:
            return cls(notify_address(value))
        except ValueError as exc:
            _log.warning("systemd notifications off", error=str(exc))
            return None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; ``True`` when it was sent."""
        message = "\n".join(assignments).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failing:  # say it once, not once a second
                _log.warning("systemd notification failed", error=str(exc))
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        """Close the sending socket."""
        self._sock.close()

    def detach(self) -> None:
        """Forget the sending socket without closing its descriptor (in a forked process,
        where the descriptor was already closed)."""
        self._sock.detach()
