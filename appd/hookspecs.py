"""Hook specifications: every point where a plugin can add behaviour to appd.

A plugin is any module or object with functions named after these specs and marked with
:data:`hookimpl`; it is installed through the ``appd.plugins`` entry-point group (see
``docs/plugins.md``).  appd always calls hooks with keyword arguments, so an implementation may
accept any subset of a spec's arguments, in any order.

``worker`` is the index of a service's process among that service's ``processes`` (``0`` up
to ``processes - 1``); it stays the same when the process at that index is restarted.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol

import pluggy

from appd.transport.request import Request, RequestHandler, RequestReply

if TYPE_CHECKING:
    import argparse
    import socket


__all__ = [
    "PROJECT_NAME",
    "Request",
    "RequestHandler",
    "RequestReply",
    "Service",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name: markers and the plugin manager must agree on it.
PROJECT_NAME: Final = "appd"

#: Marks a function in a plugin as the implementation of the hook of the same name.
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)

#: Marks a function in this module as a hook specification.
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)

class Service(Protocol):
    """What a hook receives as ``service``: an appd service (a subclass of
    :class:`appd.AppServiceBase`), described here so that the hook layer needs no import of the
    service layer above it."""

    #: The service's name.
    name: str

    def setup(self) -> None:
        """Prepare the service in its own process."""

    def run(self) -> None:
        """Do the service's work until quit is requested."""

    def teardown(self) -> None:
        """Release what setup opened."""


# -------------------------------------------------------------------------------------------
# Configuration and discovery
# -------------------------------------------------------------------------------------------


@hookspec(historic=True)
def appd_configure(config: MutableMapping[str, Any]) -> None:
    """Adjust the configuration after it is read and before it is validated.

    Historic: a plugin registered after the call is still called with the same ``config``, so
    every plugin sees it exactly once whenever it arrives.

    :param config: the settings table as read from ``appd.toml`` (or ``[tool.appd]``, or
        ``settings.APPD``): global settings, and ``config["services"][name]`` tables that
        override each service class's own attributes.  Change it in place; the result is then
        validated like the file itself.  Top-level keys a plugin adds for its own use are kept
        (``AppdConfig.extra``) rather than rejected.  ``env:``/``file:`` references are not
        resolved yet.  It may hold secrets: never log it whole.
    """


@hookspec
def appd_services() -> list[type[Service] | ModuleType]:
    """Contribute service classes, besides entry points and ``services.py`` discovery.

    Every result counts: the lists of all plugins are joined.  A class returned by two
    sources is one service; two different classes with one name are an error.  A module in
    the list stands for the service classes it defines (appd's Django app discovery returns
    each app's ``services`` module this way).

    :returns: a list of concrete subclasses of :class:`appd.AppServiceBase`, or of modules.
    """
    raise NotImplementedError


# -------------------------------------------------------------------------------------------
# Service process lifecycle
# -------------------------------------------------------------------------------------------


@hookspec
def appd_pre_fork(service: Service, worker: int) -> None:
    """Called in the supervisor just before it starts a service process.

    :param service: the service instance about to run (its settings already applied).
    :param worker: the index of the process about to start, ``0`` to ``processes - 1``.
    """


@hookspec
def appd_post_fork(service: Service, worker: int) -> None:
    """Called in the new service process, before the service's ``setup()``.

    The place to drop connections inherited from the supervisor (database handles, sockets
    that must not be shared between processes).

    :param service: the service instance that this process runs.
    :param worker: this process's index among the service's processes.
    """


@hookspec
def appd_service_ready(service: Service, worker: int) -> None:
    """Called in the service process once the service is accepting requests or running.

    :param service: the service instance that became ready.
    :param worker: this process's index among the service's processes.
    """


@hookspec
def appd_crash(
    service: Service,
    worker: int,
    exitcode: int | None,
    signal: int | None,
    restarts: int,
    will_restart: bool,
) -> None:
    """Called in the supervisor when a service process ended without being asked to.

    :param service: the service whose process ended.
    :param worker: the index of the process that ended.
    :param exitcode: the exit status when the process exited, else ``None``.
    :param signal: the number of the signal that killed the process, else ``None``.
    :param restarts: how many times this process slot had been restarted before this crash,
        over the supervisor's whole life.
    :param will_restart: ``False`` when the restart policy gives up (the service is FATAL).
    """


@hookspec
def appd_quit(reason: str) -> None:
    """Called when the supervisor shuts down, and in each service process on quit.

    :param reason: why: ``"signal SIGTERM"``, ``"stop"``, ``"fatal"``, ...
    """


# -------------------------------------------------------------------------------------------
# The supervisor
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def appd_listener(service: Service) -> socket.socket | None:
    """Give a socket service a listening socket instead of letting the supervisor bind one.

    Called in the supervisor before the first fork, once per socket service, and again each
    time the supervisor opens a service's listener anew: a service a reload adds, an address a
    reload changes, a service whose listener was closed because no process was left to run it
    (FATAL) and that a reload starts again.  The supervisor closes the socket it was given when
    the service is removed or has no process left.  Stops at the first non-``None`` result.
    Socket activation uses it: a service manager that passed listening sockets
    (``LISTEN_FDS``) hands them over.

    :param service: the socket service about to be bound.
    :returns: a bound, listening socket the supervisor then owns, or ``None`` to let it bind
        the service's own address.
    """


@hookspec
def appd_addresses() -> list[tuple[str, str]]:
    """Name the addresses a plugin listens on besides the services' (a metrics endpoint, say),
    so ``appd check`` and Django's system checks catch two listeners on one address and tell
    whether each is free.  Called after ``appd_configure``, in whichever process checks.

    :returns: ``(owner, address)`` pairs: who listens (``"prometheus endpoint"``) and where
        (``"HOST:PORT"``, or ``"unix:PATH"``); port ``0`` (any free one) is never a conflict.
    """
    raise NotImplementedError


@hookspec
def appd_status(status: Mapping[str, Any]) -> None:
    """Called in the supervisor each time it writes its status: on every change, and at least
    once a second while it runs.

    The argument is the document ``appd status --json`` prints (its schema is in
    docs/cli.md): the supervisor's state, and per service its state and its processes, each
    with ``state``, ``pid``, ``restarts``, ``requests`` and ``heartbeat_age`` (seconds since
    the process last showed life).  Readiness and watchdog notifications, and metrics of
    process state, are built on it.  Called from the supervisor's loop: return quickly.

    :param status: the status document; read-only.
    """


@hookspec
def appd_reload(phase: str) -> None:
    """Called in the supervisor around a reload (SIGHUP, ``appd reload``).

    :param phase: ``"begin"`` when the reload starts, ``"end"`` once every process has been
        replaced (or a later reload took over).
    """


# -------------------------------------------------------------------------------------------
# Requests
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def appd_request(service: Service, request: Request) -> RequestReply | None:
    """Serve one request; called in the service process for every request it receives.

    Stops at the first non-``None`` result.  appd's own implementation runs last and returns
    ``service.process_request(request)`` (the service's own dispatch).  The chain is built once
    per serving process into the service's request pipeline (:mod:`appd.hooks.pipeline`),
    whichever way the service is served; a plugin adds behaviour around it with
    ``@hookimpl(wrapper=True)`` (time, audit, or refuse a request by raising before it
    yields) or answers a request itself by returning a result first.

    :param service: the service instance handling the request.
    :param request: the decoded request (its command, arguments and keyword arguments, and
        its call's ``deadline`` and ``request_id``; the hook runs inside that scope, so
        :func:`appd.time_remaining` and :func:`appd.current_request_id` say the same).
    :returns: ``(res_args, res_kwargs)``, or ``None`` to leave the request to the next
        implementation.
    """


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


@hookspec
def appd_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``appd`` command line.

    Set ``handler`` on the new parser with ``parser.set_defaults(handler=func)``: ``appd``
    then calls ``func(args)`` and exits with the integer it returns.

    :param subparsers: the ``appd`` parser's subparsers; call ``subparsers.add_parser(...)``.
    """
