"""SecureSocketAppService: a service that answers requests over wire protocol v2.

Subclass it, set ``host``/``port`` (or ``path``), ``key``, ``username`` and ``password`` as class
attributes or properties, and either override :meth:`~SecureSocketAppService.handle_request`
(the seed's style) or mark methods with :func:`command`.  Every setting is documented, with its
default, in docs/services.md.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from appd.errors import ConfigurationError, UnknownCommand
from appd.logging import get_logger
from appd.runtime import quit_requested
from appd.service.base import AppServiceBase
from appd.service.settings import SOCKET_SETTINGS, SocketServiceSettings, build_socket_settings
from appd.transport.client import SecureSocketAppClient
from appd.transport.limits import ServerLoad
from appd.transport.listen import bind_listener, format_address
from appd.transport.loop import LoopThread
from appd.transport.protocol import ServerCredentials
from appd.transport.request import LocalCounter, Request, RequestCounter, RequestReply
from appd.transport.server import AcceptGate, SecureSocketServer, ServerSettings

if TYPE_CHECKING:
    from appd.hooks import Hooks

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

    setting_names = AppServiceBase.setting_names | SOCKET_SETTINGS

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
    concurrency: int = ServerSettings.concurrency
    #: Requests that may wait for a handler slot; past it the client gets ServiceBusy.
    max_queue: int = ServerSettings.max_queue
    #: Seconds a request may wait for a slot before the client gets ServiceBusy (None: forever).
    queue_timeout: float | None = ServerSettings.queue_timeout
    #: Authenticated connections at once (and unfinished handshakes kept at once).
    max_connections: int = ServerSettings.max_connections
    #: Largest frame accepted, in bytes; a larger length prefix closes the connection unread.
    max_frame_size: int = ServerSettings.max_frame_size
    #: Seconds a new connection has to complete its handshake.
    handshake_timeout: float = ServerSettings.handshake_timeout
    #: Seconds an authenticated connection may stay silent before it is closed (None: never).
    idle_timeout: float | None = ServerSettings.idle_timeout
    #: Seconds a handler may run before its client gets RequestTimeout (None: no limit).
    request_timeout: float | None = ServerSettings.request_timeout
    #: Seconds to finish in-flight requests after quit is requested.
    shutdown_grace: float = ServerSettings.shutdown_grace
    #: Seconds a frame may take to arrive once its first byte has (then the connection closes).
    frame_timeout: float = ServerSettings.frame_timeout
    #: Seconds a reply may take to be written to a client that does not read (then it closes).
    write_timeout: float = ServerSettings.write_timeout
    #: Permissions of the Unix socket file at ``path`` (0o600: the owner only; 0o660: its group
    #: too), whatever the umask.
    socket_mode: int = ServerSettings.socket_mode

    _commands: ClassVar[dict[str, str]] = {}

    #: The validated settings, once :meth:`configure` has built them (see
    #: :mod:`appd.service.settings`); ``None`` until then.
    settings: SocketServiceSettings | None = None
    #: What :meth:`derive_keys` derived: the pre-shared key and users it is for, and the keys.
    _derived: tuple[bytes, dict[str, str], ServerCredentials] | None = None

    def __init__(self) -> None:
        self._loop_thread: LoopThread | None = None
        self._server: SecureSocketServer | None = None
        self._counter: RequestCounter = LocalCounter()

    @property
    def requests_served(self) -> int:
        """Requests this process has answered (the counter :meth:`serve` was given)."""
        return self._counter.value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                cmd = getattr(value, _COMMAND_ATTR, None)
                if isinstance(cmd, str):
                    if attr in cls.setting_names:
                        raise ConfigurationError(
                            f"{klass.__module__}.{klass.__qualname__}: the command method "
                            f"{attr!r} (command {cmd!r}) shadows the setting {attr!r}: rename "
                            f"the method and keep the command's name with @command({cmd!r})"
                        )
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

    def process_request(self, request: Request) -> RequestReply:
        """The service's own dispatch, the innermost step of its request pipeline (plugins'
        ``appd_request`` wrappers run around it); runs :meth:`handle_request` and waits for it
        when it is asynchronous.  (A class that keeps the default :meth:`handle_request`, not
        replaced on the instance either, has a request without keyword arguments dispatched
        here: the same lookup and call, one Python call less per request.)"""
        attr = None
        if (type(self).handle_request is _HANDLE_REQUEST and not request.kwargs
                and "handle_request" not in self.__dict__):
            attr = self._commands.get(request.cmd)
        if attr is not None:
            value = getattr(self, attr)(*request.args)
            if type(value) in _NEVER_AWAITABLE or not inspect.isawaitable(value):
                return [value], {}
            result: Any = _wrap_single(value)
        else:  # anything else, an unknown command included, as handle_request says
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

    def serve(
        self,
        listener: socket.socket | None = None,
        *,
        hooks: Hooks | None = None,
        counter: RequestCounter | None = None,
        gate: AcceptGate | None = None,
    ) -> None:
        """Serve until :func:`appd.runtime.quit_requested`, then finish in-flight requests within
        ``shutdown_grace`` seconds and return.  Binds first when no ``listener`` is given (and
        then closes it on return; a given listener is left open for its owner).

        Requests go through the service's request pipeline, built once here: every plugin's
        ``appd_request`` wrapper around :meth:`process_request`.

        :param hooks: the plugins to serve with; by default appd's builtins, the ``plugins``
            of the configuration found from the working directory (see :mod:`appd.config`)
            and the installed ``appd.plugins`` entry points, so plugins see every request
            however the service is served.
        :param counter: counts answered requests (the supervisor passes its scoreboard's);
            :attr:`requests_served` reads it.
        :param gate: set by the supervisor: it spreads connections over the service's
            processes and receives this process's heartbeat; the listener, shared with those
            processes, is then closed as soon as serving stops.
        """
        from appd.hooks import configured_hooks
        from appd.hooks.pipeline import build_pipeline

        settings = self.settings if self.settings is not None else self.configure()
        handler = build_pipeline(hooks if hooks is not None else configured_hooks(), self)
        if counter is not None:
            self._counter = counter
        own = listener is None
        sock = self.bind() if listener is None else listener
        where = sock.getsockname()
        log.info("serving", service=self.name, address=str(where) or settings.address)
        self._server = SecureSocketServer(
            settings.server, handler, sock, counter=self._counter, gate=gate,
            credentials=self._derived_for(settings.server),
        )
        try:
            self._server.serve(quit_requested)
        finally:
            self._server = None
            if own:
                sock.close()
            if self._loop_thread is not None:
                self._loop_thread.stop()
                self._loop_thread = None
            log.info("stopped serving", service=self.name, requests=self.requests_served)

    def server_load(self) -> ServerLoad | None:
        """While :meth:`serve` runs, in this process: handlers running, requests waiting for a
        slot, requests refused busy and requests not run because their deadline passed, by
        command (``None`` when not serving).  Metrics plugins sample it; busy refusals and
        expired requests never reach ``appd_request``."""
        server = self._server
        return None if server is None else server.load()

    def run(self) -> None:
        """Serve requests until quit is requested."""
        self.serve()

    def derive_keys(self) -> None:
        """Derive the keys a handshake is checked with (scrypt of the pre-shared key and of
        each user's password, tens of milliseconds each) and keep them on the service, so that
        :meth:`serve`, in this process or in one forked from it afterwards, starts with them
        instead of deriving them first.  The supervisor calls it before it forks the service's
        processes: a restart after a crash then answers that much sooner.  Nothing is derived
        again while the key and the users stay the same.

        :raises ConfigurationError: the service's settings are invalid.
        """
        server = self.settings.server if self.settings is not None else self.server_settings()
        if self._derived_for(server) is None:
            credentials = ServerCredentials(server.psk, server.users)
            self._derived = (server.psk, dict(server.users), credentials)

    def _derived_for(self, server: ServerSettings) -> ServerCredentials | None:
        """The keys :meth:`derive_keys` derived, if they are for ``server``'s key and users."""
        derived = self._derived
        if derived is None or derived[0] != server.psk or derived[1] != dict(server.users):
            return None
        return derived[2]

    def configure(
        self,
        table: Mapping[str, Any] | None = None,
        *,
        source: str = "configuration",
    ) -> SocketServiceSettings:
        """Validate the service's settings once and keep them in :attr:`settings`.

        The class's attributes (or properties), overridden by ``table`` (the service's
        ``[services.<name>]`` table, references resolved), are read through the
        configuration's reader: an error names ``source`` and the key, or the class and the
        attribute the bad value came from.  The validated values are also set on the instance,
        so a handler reading ``self.port`` sees what the service serves with.

        :raises ConfigurationError: an unknown or malformed setting; nothing is changed then.
        """
        table = dict(table or {})
        self._check_known(table, source=source)
        self._check_reload(table, source=source)
        settings = self._read_settings(table, source=source)
        for setting, value in table.items():
            setattr(self, setting, value)
        self.settings = settings
        return settings

    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Override settings on this instance; they are validated when it serves (or by
        :meth:`configure`, which also applies a table)."""
        super().apply_settings(settings)
        self.settings = None

    def server_settings(self) -> ServerSettings:
        """The server's settings as the service's attributes say *now*, validated (a new
        object each call; :attr:`settings` is what :meth:`configure` built once)."""
        return self._read_settings({}, source="configuration").server

    def _read_settings(self, table: Mapping[str, Any], *, source: str) -> SocketServiceSettings:
        """The instance's values overridden by ``table``, validated; a value from the class is
        named by its attribute (``shop.services.PowerService.port``), one from the table by
        ``source`` and its key."""
        cls = type(self)
        origin = f"{cls.__module__}.{cls.__qualname__}"
        values = {name: getattr(self, name) for name in SOCKET_SETTINGS}
        values.update({k: v for k, v in table.items() if k in SOCKET_SETTINGS})
        return build_socket_settings(
            self.name,
            values,
            source=source,
            prefix=f"services.{self.name}.",
            origins={name: f"{origin}.{name}" for name in SOCKET_SETTINGS - set(table)},
        )


async def _wrap_single(value: Awaitable[Any]) -> tuple[list[Any], dict[str, Any]]:
    return [await value], {}


_HANDLE_REQUEST = SecureSocketAppService.handle_request
