"""appd's exceptions: one tree under :class:`AppdError`.

Every message names what happened and where; none ever contains a key or a password.

::

    AppdError
    ├── ConfigurationError      a setting is missing, malformed or contradictory
    │   └── AddressInUse            a service's listening address is taken by another process
    ├── DiscoveryError          a service or plugin module could not be found or imported
    │   └── DuplicateServiceError   two services claim one name
    ├── EntryLoadError          a "module:function" entry could not be imported or is not callable
    ├── PidFileLocked           a live process holds the pid file's lock (carries its ``pid``)
    ├── UnknownCommand          a request named a command the service does not have
    ├── CapacityError           a named capacity could not grant a lease
    │   ├── CapacityTimeout         every slot stayed taken until the acquire timeout
    │   └── CapacityUnavailable     the capacity's backend (Redis, the slot directory) failed
    └── TransportError          talking to a service over its socket failed
        ├── ConnectFailed           no connection: refused, unreachable or connect timed out
        ├── ConnectionLost          the connection broke while a request was in flight
        ├── AuthenticationFailed    wrong key, username or password (deliberately generic)
        ├── ProtocolError           the peer broke the wire protocol (bad frame, failed MAC, ...)
        ├── RequestTimeout          no reply within the deadline (``not_executed``: surely not run)
        │   └── DeadlineExceeded        the deadline passed before the request started: not run
        ├── ServiceBusy             the service's connection or queue limits turned us away
        └── RemoteError             the handler raised; carries the remote type and message
            ├── RemoteCapacityTimeout       ... a CapacityTimeout (also one itself)
            └── RemoteCapacityUnavailable   ... a CapacityUnavailable (also one itself)
"""

from __future__ import annotations

__all__ = [
    "AddressInUse",
    "AppdError",
    "AuthenticationFailed",
    "CapacityError",
    "CapacityTimeout",
    "CapacityUnavailable",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "DeadlineExceeded",
    "DiscoveryError",
    "DuplicateServiceError",
    "EntryLoadError",
    "PidFileLocked",
    "ProtocolError",
    "RemoteCapacityTimeout",
    "RemoteCapacityUnavailable",
    "RemoteError",
    "RequestTimeout",
    "ServiceBusy",
    "TransportError",
    "UnknownCommand",
    "remote_error",
]


class AppdError(Exception):
    """Base of every exception appd raises on purpose."""


class ConfigurationError(AppdError):
    """A configuration value is missing, malformed or contradictory."""


class AddressInUse(ConfigurationError):
    """A service could not bind its address because another socket already holds it."""


class DiscoveryError(AppdError):
    """A service module, class or entry point could not be found or imported.

    The message's first line says what failed and why; an import failure's traceback follows
    on the next lines (and the original exception is the ``__cause__``).
    """

    @property
    def summary(self) -> str:
        """The message's first line: what failed and why, without the traceback."""
        return str(self).split("\n", 1)[0]

    @property
    def details(self) -> str | None:
        """The rest of the message (an import failure's traceback), if any."""
        rest = str(self).partition("\n")[2].strip()
        return rest or None


class DuplicateServiceError(DiscoveryError):
    """Two services have the same name; the message names both sources."""


class EntryLoadError(AppdError):
    """A ``"module:function"`` entry names a module that fails to import, or no callable."""


class PidFileLocked(AppdError):
    """A live process holds the lock of a pid file, so this process may not take it.

    :param path: the pid file.
    :param pid: the pid written by the live holder, or None when it could not be read in time.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        #: The pid of the live process holding the lock (None when the file gave none in time).
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"pid file {path!r} is locked by {holder}, which is still running")


class UnknownCommand(AppdError):
    """The default ``handle_request`` found no ``@command`` method of the requested name."""


class CapacityError(AppdError):
    """A named capacity could not grant a lease; nothing was granted."""


class CapacityTimeout(CapacityError):
    """Every slot of the capacity stayed taken until the acquire timeout ran out."""


class CapacityUnavailable(CapacityError):
    """The capacity's backend could not be reached or failed (Redis down, slot directory
    unusable), so appd cannot know how many holders there are and grants nothing."""


class TransportError(AppdError):
    """Base of every failure to talk to a service over its socket."""


class ConnectFailed(TransportError):
    """The client could not connect (refused, unreachable, or the connect timed out).

    Nothing was sent, so retrying later is always safe.
    """


class ConnectionLost(TransportError):
    """The connection broke after a request was sent and before its reply arrived.

    The request may or may not have run; appd never re-sends it on its own.
    """


class AuthenticationFailed(TransportError):
    """The service refused the key, the username or the password.

    The message is the same whichever of them was wrong, so it tells an attacker nothing.
    """


class ProtocolError(TransportError):
    """The peer sent something the wire protocol forbids; the connection was closed."""


class RequestTimeout(TransportError):
    """No reply arrived within the deadline (the client's ``timeout`` or ``appd.deadline``
    scope, or the service's ``request_timeout``).

    :ivar not_executed: True when the request surely did not run (it was never sent, or the
        service refused it unstarted); False when it may have run.
    """

    def __init__(self, message: str = "", *, not_executed: bool = False) -> None:
        super().__init__(message)
        self.not_executed = not_executed


class DeadlineExceeded(RequestTimeout):
    """The call's deadline passed before its request started: the service did not run it (it
    waited behind ``concurrency``, a capacity lease or a pool for too long, or arrived late), or
    the client never sent it.  Always ``not_executed``; safe to retry with a fresh deadline.

    A handler may raise it too, to say it gave up before doing anything (appd's own capacity
    waits do): its caller then gets a ``DeadlineExceeded`` as well.  One a *client* raised
    inside a handler (a call to another service) is different: the handler may have acted
    before that call, so its caller gets a :class:`RequestTimeout` that may have run.

    :ivar address: the service the refused call was addressed to, when a client raised it
        (None when a wait in this process raised it).
    """

    def __init__(
        self, message: str = "", *, not_executed: bool = True, address: str | None = None
    ) -> None:
        super().__init__(message, not_executed=not_executed)
        self.address = address

    @property
    def unstarted(self) -> bool:
        """True when this process gave up before the request acted (a wait in it raised this,
        or a handler's own give-up): its caller may be told "not executed"."""
        return self.address is None and self.not_executed


class ServiceBusy(TransportError):
    """The service turned the request away: too many connections, or its queue was full or the
    request waited longer than ``queue_timeout``.  The request did not run."""


class RemoteError(TransportError):
    """The service's handler raised; the service itself goes on serving.

    :ivar remote_type: the name of the exception class raised on the service's side.
    :ivar remote_message: its message.
    """

    def __init__(self, remote_type: str, remote_message: str, *, context: str = "") -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}remote {remote_type}: {remote_message}")

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (type(self), (self.remote_type, self.remote_message))


class RemoteCapacityTimeout(RemoteError, CapacityTimeout):
    """The service's handler raised :class:`CapacityTimeout`: the client sees it as that
    (``except CapacityTimeout``) and as the :class:`RemoteError` it also is."""


class RemoteCapacityUnavailable(RemoteError, CapacityUnavailable):
    """The service's handler raised :class:`CapacityUnavailable`: the client sees it as that
    and as the :class:`RemoteError` it also is."""


#: Remote error types a client raises as their own class rather than a plain RemoteError.
_REMOTE_TYPES: dict[str, type[RemoteError]] = {
    "CapacityTimeout": RemoteCapacityTimeout,
    "CapacityUnavailable": RemoteCapacityUnavailable,
}


def remote_error(remote_type: str, remote_message: str, *, context: str = "") -> RemoteError:
    """The exception a client raises for a handler's error: a :class:`RemoteError`, of the
    subclass that also is the original appd error when there is one (capacity errors)."""
    cls = _REMOTE_TYPES.get(remote_type, RemoteError)
    return cls(remote_type, remote_message, context=context)
