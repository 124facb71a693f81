"""appd's own behaviour, written as hook implementations so that plugins can wrap it."""

from __future__ import annotations

from typing import Any

from appd.hookspecs import hookimpl
from appd.transport.request import RequestReply

__all__ = ["appd_request"]


@hookimpl(trylast=True)
def appd_request(service: Any, request: Any) -> RequestReply:
    """Serve the request with the service's own dispatch: the innermost step of every request."""
    return service.process_request(request)  # type: ignore[no-any-return]
