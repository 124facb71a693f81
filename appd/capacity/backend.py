"""What every capacity backend offers, and the plain records they hand back.

A backend keeps the holders of one named capacity somewhere every sharing process can see
(slot files on one host, a Redis sorted set across hosts).  It makes single attempts;
:class:`~appd.capacity.capacity.Capacity` owns the waiting loop, the deadline and the
errors, so that logic exists once whatever the backend.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Backend", "CapacityStatus", "Grant", "HolderInfo", "new_holder_id"]


def new_holder_id() -> str:
    """A name for one lease, unique across hosts and processes: ``host:pid:random``.

    Operators see it in ``appd status``; the random part tells two leases of one process apart.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Grant:
    """A slot a backend granted.

    :ivar holder: the holder id it was granted to.
    :ivar token: the fencing token: strictly greater than every token granted before it by the
        same capacity.
    :ivar handle: what the backend needs to renew and release it (an open slot file, ...).
    """

    holder: str
    token: int
    handle: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class HolderInfo:
    """One holder as ``appd status`` shows it.

    :ivar holder: ``host:pid:random``.
    :ivar token: its fencing token (None when the backend does not know it).
    :ivar expires_in: seconds until the lease expires unless renewed (None: it never expires on
        its own, as with the local backend, whose slots die with their process).
    """

    holder: str
    token: int | None = None
    expires_in: float | None = None


@dataclass(frozen=True)
class CapacityStatus:
    """How a capacity stands now.

    :ivar name: the capacity.
    :ivar limit: holders allowed at once.
    :ivar backend: the backend, safe to show (no password).
    :ivar holders: who holds a slot.
    :ivar waiters: how many acquirers are waiting for one.
    """

    name: str
    limit: int
    backend: str
    holders: tuple[HolderInfo, ...]
    waiters: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape ``appd status --json`` prints."""
        return {
            "name": self.name,
            "limit": self.limit,
            "backend": self.backend,
            "holders": [
                {"holder": h.holder, "token": h.token, "expires_in": h.expires_in}
                for h in self.holders
            ],
            "waiters": self.waiters,
        }


class Backend(Protocol):
    """One capacity's store of holders.  Every method raises
    :class:`~appd.errors.CapacityUnavailable` when the store cannot be used; none ever grants
    beyond the limit when it cannot tell."""

    #: The backend as shown in logs, errors and status (never with a password).
    label: str
    #: True when an unrenewed grant expires on its own (Redis); False when a grant lasts until
    #: released or until its process dies (local slot files).
    leases_expire: bool

    def try_acquire(self, holder: str) -> Grant | None:
        """One attempt: a grant, or None when every slot is taken (the holder then counts as
        waiting until it is granted or :meth:`withdraw` is called)."""

    def wait(self, holder: str, seconds: float, attempt: int) -> None:
        """Block until a slot may have come free (a release woke us) or ``seconds`` passed.

        :param attempt: how many attempts failed so far (backends poll less often as it grows).
        """

    def withdraw(self, holder: str) -> None:
        """Stop counting ``holder`` as waiting (it gave up)."""

    def renew(self, grant: Grant) -> bool:
        """Extend the grant's lifetime; False when it is no longer held (it was lost)."""

    def release(self, grant: Grant) -> None:
        """Give the slot back and wake one waiter."""

    def status(self) -> CapacityStatus:
        """Holders and waiters now."""

    def check(self) -> None:
        """Raise :class:`~appd.errors.CapacityUnavailable` unless the store answers."""

    def close(self) -> None:
        """Let go of connections and files (held grants are not released)."""
