"""appd's own behaviour, written as hook implementations so that plugins can wrap it."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from appd.hookspecs import RequestHandler, RequestReply, hookimpl

__all__ = ["appd_request", "innermost_handler"]

#: Set by :meth:`appd.hooks.Hooks.appd_request` when the caller names the handler to use
#: instead of ``service.process_request`` (per thread and per task, as requests are).
innermost_handler: ContextVar[Callable[[Any], RequestReply] | None] = ContextVar(
    "appd_innermost_handler", default=None
)


@hookimpl(trylast=True)
def appd_request(service: RequestHandler, request: Any) -> RequestReply:
    """Serve the request with the service's own handler: the innermost step of every request."""
    handler = innermost_handler.get()
    if handler is not None:
        return handler(request)
    return service.process_request(request)
