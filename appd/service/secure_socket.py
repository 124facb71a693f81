"""SecureSocketAppService: a service that answers requests over wire protocol v1.

Subclass it, set ``host``/``port`` (or ``path``), ``key``, ``username`` and ``password`` as class
attributes or properties, and either override :meth:`~SecureSocketAppService.handle_request`
(the seed's style) or mark methods with :func:`command`.  Every setting is documented, with its
default, in docs/services.md.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar, overload

from appd.errors import ConfigurationError, UnknownCommand
from appd.logging import get_logger
from appd.runtime import quit_requested
from appd.service.base import AppServiceBase
from appd.transport.client import SecureSocketAppClient
from appd.transport.crypto import key_bytes
from appd.transport.listen import (
    DEFAULT_SOCKET_MODE,
    bind_listener,
    checked_socket_mode,
    format_address,
)
from appd.transport.loop import LoopThread
from appd.transport.protocol import DEFAULT_MAX_FRAME_SIZE
from appd.transport.server import Request, SecureSocketServer, ServerSettings

__all__ = ["Request", "SecureSocketAppClient", "SecureSocketAppService", "command"]

log = get_logger("appd.service")

F = TypeVar("F", bound=Callable[..., Any])

_COMMAND_ATTR = "__appd_command__"
#: Result types that cannot be awaitable: skips ``inspect.isawaitable`` for the usual replies.
_NEVER_AWAITABLE: frozenset[type] = frozenset(
    {type(None), bool, int, float, str, bytes, list, dict, tuple}
)


@overload
def command(func: F, /) -> F: ...
@overload
def command(name: str | None = None, /) -> Callable[[F], F]: ...


def command(arg: Any = None, /) -> Any:
    """Mark a method of a :class:`SecureSocketAppService` as a command clients may call.

    ``@command`` uses the method's name; ``@command("name")`` another one.  The default
    :meth:`~SecureSocketAppService.handle_request` calls the method with the request's
    arguments and sends its return value back as the single result (``client.call(...)``
    returns it).  ``async def`` methods work too.
    """

    def mark(func: F, name: str | None) -> F:
        setattr(func, _COMMAND_ATTR, name or func.__name__)
        return func

    if callable(arg):
        return mark(arg, None)
    return lambda func: mark(func, arg)


class SecureSocketAppService(AppServiceBase):
    """A service answering authenticated, encrypted requests on a TCP or Unix socket."""

    abstract = True

    setting_names = AppServiceBase.setting_names | {
        "host", "port", "path", "key", "username", "password", "users", "concurrency",
        "max_queue", "queue_timeout", "max_connections", "max_frame_size",
        "handshake_timeout", "idle_timeout", "request_timeout", "shutdown_grace",
        "frame_timeout", "write_timeout", "socket_mode",
    }

    #: Interface to listen on (TCP).
    host: str | None = "127.0.0.1"
    #: TCP port; 0 picks a free one.  Ignored when ``path`` is set.
    port: int | None = None
    #: Unix socket path; when set the service listens there instead of on TCP.
    path: str | None = None
    #: The pre-shared key (str or bytes, at least 16 bytes; ``appd keygen`` makes one).
    key: str | bytes | None = None
    #: The one user's name and password (the seed's style)...
    username: str | None = None
    password: str | None = None
    #: ...or several users: ``{name: password}`` (both may be given; they are merged).
    users: Mapping[str, str] | None = None
    #: Handlers running at once; 1 means handlers need not be thread-safe.
    concurrency: int = 1
    #: Requests that may wait for a handler slot; past it the client gets ServiceBusy.
    max_queue: int = 64
    #: Seconds a request may wait for a slot before the client gets ServiceBusy (None: forever).
    queue_timeout: float | None = 10.0
    #: Authenticated connections at once (and unfinished handshakes kept at once).
    max_connections: int = 256
    #: Largest frame accepted, in bytes; a larger length prefix closes the connection unread.
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    #: Seconds a new connection has to complete its handshake.
    handshake_timeout: float = 5.0
    #: Seconds an authenticated connection may stay silent before it is closed (None: never).
    idle_timeout: float | None = 300.0
    #: Seconds a handler may run before its client gets RequestTimeout (None: no limit).
    request_timeout: float | None = 60.0
    #: Seconds to finish in-flight requests after quit is requested.
    shutdown_grace: float = 10.0
    #: Seconds a frame may take to arrive once its first byte has (then the connection closes).
    frame_timeout: float = 10.0
    #: Seconds a reply may take to be written to a client that does not read (then it closes).
    write_timeout: float = 10.0
    #: Permissions of the Unix socket file at ``path`` (0o600: the owner only; 0o660: its group
    #: too), whatever the umask.
    socket_mode: int = DEFAULT_SOCKET_MODE

    #: Requests this process has answered (per process; the supervisor reads it).
    requests_served: int = 0

    _commands: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.requests_served = 0
        self._loop_thread: LoopThread | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                cmd = getattr(value, _COMMAND_ATTR, None)
                if isinstance(cmd, str):
                    commands[cmd] = attr
        cls._commands = commands

    # -- requests ----------------------------------------------------------------------------

    def handle_request(self, reqcmd: str, *args: Any, **kwargs: Any) -> Any:
        """Answer one request with ``(res_args, res_kwargs)``.

        The default calls the :func:`command` method named ``reqcmd`` and returns
        ``([value], {})``; override it to dispatch yourself, as the seed does.  It may also be
        an ``async def`` (or return an awaitable).
        """
        attr = self._commands.get(reqcmd)
        if attr is None:
            raise UnknownCommand(f"service {self.name!r} has no command {reqcmd!r}")
        value = getattr(self, attr)(*args, **kwargs)
        if type(value) not in _NEVER_AWAITABLE and inspect.isawaitable(value):
            return _wrap_single(value)
        return [value], {}

    def process_request(self, request: Request) -> tuple[list[Any], dict[str, Any]]:
        """The one seam every request passes through (plugins wrap it); runs
        :meth:`handle_request` and waits for it when it is asynchronous."""
        result = self.handle_request(request.cmd, *request.args, **request.kwargs)
        if type(result) is not tuple and inspect.isawaitable(result):
            if self._loop_thread is None:
                self._loop_thread = LoopThread()
            result = self._loop_thread.run(result, self.request_timeout)
        return result  # type: ignore[no-any-return]

    # -- serving -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where the service listens, as ``host:port`` or ``unix:path``."""
        return format_address(self.host, self.port, self.path)

    def bind(self) -> socket.socket:
        """Create, bind and listen on the service's address (before forking, for a supervisor
        that shares one socket among ``processes``).  Raises :class:`~appd.errors.AddressInUse`
        naming the service and the address when it is taken."""
        return bind_listener(
            self.name, self.host, self.port, self.path, socket_mode=self.socket_mode
        )

    def serve(self, listener: socket.socket | None = None) -> None:
        """Serve until :func:`appd.runtime.quit_requested`, then finish in-flight requests within
        ``shutdown_grace`` seconds and return.  Binds first when no ``listener`` is given (and
        then closes it on return; a given listener is left open for its owner)."""
        settings = self.server_settings()
        own = listener is None
        sock = self.bind() if listener is None else listener
        where = sock.getsockname()
        log.info("serving", service=self.name, address=str(where) or self.address)
        try:
            SecureSocketServer(settings, self, sock).serve(quit_requested)
        finally:
            if own:
                sock.close()
            if self._loop_thread is not None:
                self._loop_thread.stop()
                self._loop_thread = None
            log.info("stopped serving", service=self.name, requests=self.requests_served)

    def run(self) -> None:
        """Serve requests until quit is requested."""
        self.serve()

    def server_settings(self) -> ServerSettings:
        """The service's settings, read now and checked; :class:`ConfigurationError` names any
        missing or malformed one (never echoing a secret)."""
        name = self.name
        if self.key is None:
            raise ConfigurationError(f"service {name!r} has no key")
        psk = key_bytes(self.key, owner=f"service {name!r}")
        return ServerSettings(
            name=name,
            psk=psk,
            users=self._user_table(),
            concurrency=_positive_int(name, "concurrency", self.concurrency),
            max_queue=_positive_int(name, "max_queue", self.max_queue, minimum=0),
            queue_timeout=_seconds(name, "queue_timeout", self.queue_timeout, optional=True),
            max_connections=_positive_int(name, "max_connections", self.max_connections),
            max_frame_size=_positive_int(
                name, "max_frame_size", self.max_frame_size, minimum=1024
            ),
            handshake_timeout=_seconds(name, "handshake_timeout", self.handshake_timeout),
            idle_timeout=_seconds(name, "idle_timeout", self.idle_timeout, optional=True),
            request_timeout=_seconds(
                name, "request_timeout", self.request_timeout, optional=True
            ),
            shutdown_grace=_seconds(name, "shutdown_grace", self.shutdown_grace, minimum=0.0),
            frame_timeout=_seconds(name, "frame_timeout", self.frame_timeout),
            write_timeout=_seconds(name, "write_timeout", self.write_timeout),
            socket_mode=checked_socket_mode(name, self.socket_mode),
        )

    def _user_table(self) -> dict[str, str]:
        users: dict[str, str] = {}
        if self.users:
            users.update(self.users)
        if self.username is not None or self.password is not None:
            if not self.username or self.password is None:
                raise ConfigurationError(
                    f"service {self.name!r}: username and password must be set together"
                )
            users[self.username] = self.password
        if not users:
            raise ConfigurationError(
                f"service {self.name!r} has no users: set username and password, or users"
            )
        for user, password in users.items():
            if not isinstance(user, str) or not isinstance(password, str):
                raise ConfigurationError(
                    f"service {self.name!r}: usernames and passwords must be strings"
                )
        return users


async def _wrap_single(value: Awaitable[Any]) -> tuple[list[Any], dict[str, Any]]:
    return [await value], {}


def _positive_int(service: str, setting: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"service {service!r}: {setting} must be an integer >= {minimum}, not {value!r}"
        )
    return value


def _seconds(
    service: str, setting: str, value: Any, *, optional: bool = False, minimum: float = 1e-3
) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigurationError(
            f"service {service!r}: {setting} must be a number of seconds >= {minimum}"
            f"{' or None' if optional else ''}, not {value!r}"
        )
    return float(value)
