"""Structured logging for every appd process.

Each process (the caller, a guardian, an executor, a worker, a service process) calls
:func:`configure_logging` once, right after it comes to life, naming its *role*.  Every record
then carries that role and the pid of the process that wrote it, so interleaved lines from a
whole process tree stay readable.  Records are JSON lines when the output is not a terminal (what
journald, Kubernetes and log shippers want) and a coloured console layout on a terminal.

structlog renders the event to one string and hands it to the standard library's ``logging``, so
an application's own ``logging_config`` (a :func:`logging.config.dictConfig` dictionary, as the
seed's users pass it) still decides where records go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import IO, Any, Literal

import structlog

from appd.scope import current_request_id

__all__ = ["StdioRecords", "configure_logging", "current_role", "get_logger", "set_log_fields"]

#: The role of this process: "main", "guardian", "executor", or a worker's or service's name.
_role = "main"

Renderer = Literal["json", "console"]

#: Fields every record of this process carries (a service process's service and worker).
_fields: dict[str, Any] = {}


def current_role() -> str:
    """The role this process announced in its last :func:`configure_logging` call."""
    return _role


def _add_role_and_pid(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Read at log time, not at configure time: a forked child logs its own pid even before it
    # reconfigures.
    event_dict.setdefault("role", _role)
    event_dict.setdefault("pid", os.getpid())
    for key, value in _fields.items():
        event_dict.setdefault(key, value)
    # Written while a request is handled (or inside an ``appd.request_id`` scope): its id.
    rid = current_request_id()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


def set_log_fields(**fields: Any) -> None:
    """Add ``fields`` to every record this process writes from now on, whatever the thread
    (a service process sets ``service`` and ``worker``, so every line names where it is from).
    """
    _fields.update(fields)


_RENDERED = "_appd_rendered"

#: The environment variable that sets the level of every process of a run (``appd run -v N``,
#: ``--log-level``); it overrides the configuration's ``log_level``.
LOG_LEVEL_ENV_VAR = "APPD_LOG_LEVEL"


class _Formatter(logging.Formatter):
    """Passes structlog's records through as rendered; renders a record logged through the
    standard library directly (an application's ``logging.getLogger(...)``) with the same
    processors, so it too carries role, pid and fields, in the same format."""

    def __init__(self, processors: list[Any]) -> None:
        super().__init__("%(message)s")
        self.processors = processors

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return record.getMessage()
        event: Any = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.exc_info:
            event["exc_info"] = record.exc_info
        try:
            for processor in self.processors:
                event = processor(None, record.levelname.lower(), event)
        except Exception:
            return super().format(record)
        return str(event)


class _ConsoleLines:
    """On a terminal, a multi-line value (an error that quotes a traceback, a service process's
    ``exception``) is printed as the lines it is, below the record's line, instead of one long
    line of ``\\n`` escapes."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        blocks = [
            f"{key}:\n{event_dict.pop(key).rstrip()}"
            for key, value in list(event_dict.items())
            if key not in ("event", "exception") and isinstance(value, str) and "\n" in value
        ]
        if blocks:
            exception = event_dict.get("exception")
            event_dict["exception"] = "\n".join(
                [*blocks, *([str(exception).rstrip()] if exception else [])]
            )
        return self.renderer(logger, method, event_dict)


def _choose_renderer(stream: IO[str]) -> Renderer:
    try:
        return "console" if stream.isatty() else "json"
    except (ValueError, OSError):  # a closed or odd stream: machines read it
        return "json"


def configure_logging(
    role: str,
    *,
    logging_config: Mapping[str, Any] | None = None,
    stream: IO[str] | None = None,
    renderer: Renderer | None = None,
    level: int | str | None = None,
) -> None:
    """Set up structlog and the standard library's logging for this process.

    :param role: what this process is, carried by every record ("guardian", "executor",
        a worker's name, ...).
    :param logging_config: a :func:`logging.config.dictConfig` dictionary; when given it decides
        handlers and levels, and appd adds none of its own.
    :param stream: where appd's default handler writes (standard error when omitted).
    :param renderer: ``"json"`` or ``"console"``; by default JSON unless ``stream`` is a terminal.
    :param level: the root level for appd's default handler; by default ``APPD_LOG_LEVEL``
        when set (``appd run -v N`` / ``--log-level`` set it for every process of a run), else
        ``INFO``.

    Calling it again in the same process changes the role and replaces appd's handler; it never
    stacks handlers.
    """
    global _role
    _role = role
    out = stream if stream is not None else sys.stderr
    chosen = renderer or _choose_renderer(out)
    final: Any = (
        _ConsoleLines(
            # Plain tracebacks: a rich one would print every frame's local variables, and a
            # handler's locals may hold a key or a password.
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        )
        if chosen == "console"
        else structlog.processors.JSONRenderer(default=repr)
    )
    stamp: list[Any] = [
        _add_role_and_pid,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]

    def rendered(logger: Any, method: str, event_dict: Any) -> Any:
        # Marked, so appd's handler passes it through while it renders other records itself.
        return (final(logger, method, event_dict),), {"extra": {_RENDERED: True}}

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            *stamp,
            rendered,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_appd_handler", False):
            root.removeHandler(handler)
    if logging_config is not None:
        # Imported here: it brings logging.handlers, socketserver and queue (0.5 MB of every
        # process's memory), which only an application's own configuration needs.
        from logging.config import dictConfig

        dictConfig(dict(logging_config))
        return
    handler = logging.StreamHandler(out)
    handler.setFormatter(_Formatter([*stamp, final]))
    handler._appd_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if level is not None else
                  (os.environ.get(LOG_LEVEL_ENV_VAR) or "INFO").upper())


def _route_to_stdlib_unless_configured() -> None:
    """Until this process calls :func:`configure_logging` (or configures structlog itself),
    send appd's records to the standard library's ``logging`` rather than structlog's default
    of printing every level to standard output: a web worker that imports appd (and builds a
    plugin manager, which logs each plugin it loads) keeps its output to itself, and its own
    logging configuration decides what is shown (by default warnings and errors, on stderr)."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            _add_role_and_pid,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "appd") -> Any:
    """A structlog logger whose records go through the standard library logger ``name``."""
    _route_to_stdlib_unless_configured()
    return structlog.stdlib.get_logger(name)


class StdioRecords:
    """A process's stray standard output and error, turned into log records.

    A service process's handlers may ``print`` or write to ``sys.stderr`` (a library's warning, a
    C extension's message).  :meth:`start` points file descriptors 1 and 2 at pipes and keeps the
    real standard error (a duplicate) for the log handler; a thread reads the pipes and logs each
    line as a record of the logger ``appd.output`` with ``stream`` (``stdout``/``stderr``), so it
    carries the process's role, pid and fields in the configured format like every other record.
    :meth:`stop` (at the end of the process) flushes, closes the pipes and waits for the last
    lines.
    """

    def __init__(self) -> None:
        self._thread: Any = None
        self._log_stream: IO[str] | None = None

    def start(self) -> IO[str]:
        """Redirect 1 and 2; return the stream the log handler must write to (the real
        standard error)."""
        import threading

        sys.stdout.flush()
        sys.stderr.flush()
        self._log_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8")
        readers = []
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            readers.append((read_end, name))
        self._thread = threading.Thread(
            target=self._pump, args=(readers,), name="appd-stdio", daemon=True
        )
        self._thread.start()
        return self._log_stream

    def _pump(self, readers: list[tuple[int, str]]) -> None:
        import selectors

        log = get_logger("appd.output")
        selector = selectors.DefaultSelector()
        partial: dict[int, bytes] = {}
        for fd, name in readers:
            selector.register(fd, selectors.EVENT_READ, name)
            partial[fd] = b""
        while selector.get_map():
            for key, _ in selector.select():
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if partial[fd]:
                        log.info(partial[fd].decode(errors="replace"), stream=key.data)
                    selector.unregister(fd)
                    os.close(fd)
                    continue
                *lines, partial[fd] = (partial[fd] + chunk).split(b"\n")
                for line in lines:
                    log.info(line.decode(errors="replace").rstrip("\r"), stream=key.data)
        selector.close()

    def stop(self, timeout: float = 1.0) -> None:
        """Flush what was written, close the pipes' write ends and log the last lines."""
        if self._thread is None:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        self._thread.join(timeout)
        self._thread = None
