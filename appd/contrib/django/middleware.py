"""``RequestScopeMiddleware``: a web request's id and remaining time, carried by its appd calls.

Add ``"appd.contrib.django.middleware.RequestScopeMiddleware"`` to ``MIDDLEWARE`` (near the
top: what runs before it is not timed).  For each web request it

* takes the request id from the ``X-Request-ID`` header (a load balancer's or a proxy's; the
  header is ``settings.APPD_REQUEST_ID_HEADER``), or makes one, and returns it in the response's
  same header; every appd call made while the request is handled carries it, so the service's
  log records for those calls name it (``request_id``);
* when ``settings.APPD_REQUEST_DEADLINE`` is set (seconds: the web request's budget, e.g. the
  web server's worker timeout less a margin), opens an ``appd.deadline`` scope for that long:
  each appd call sends what is left of it, and the service does not start a call the web
  request no longer waits for.

``request.appd_request_id`` is the id.  Sync and async views are served alike.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from appd.scope import MAX_REQUEST_ID, deadline, new_request_id, request_id

__all__ = ["RequestScopeMiddleware"]

#: The header a request id is read from and written to unless ``APPD_REQUEST_ID_HEADER`` says.
DEFAULT_HEADER = "X-Request-ID"
#: What an incoming id may look like: printable ASCII without spaces (anything else, a
#: client's attempt to put newlines or markup in the service's logs included, is replaced).
_ACCEPTED = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")


def _budget() -> float | None:
    value = getattr(settings, "APPD_REQUEST_DEADLINE", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ImproperlyConfigured(
            f"APPD_REQUEST_DEADLINE must be a number of seconds above 0 (or None), "
            f"not {value!r}"
        )
    return float(value)


def _header() -> str:
    value = getattr(settings, "APPD_REQUEST_ID_HEADER", DEFAULT_HEADER)
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured(f"APPD_REQUEST_ID_HEADER must be a header name, not {value!r}")
    return value


class RequestScopeMiddleware:
    """See the module docstring."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.budget = _budget()
        self.header = _header()
        self.meta_key = "HTTP_" + self.header.upper().replace("-", "_")
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        rid = self._request_id(request)
        with self._scope(rid):
            response = self.get_response(request)
        response[self.header] = rid
        return response

    async def __acall__(self, request: Any) -> Any:
        rid = self._request_id(request)
        with self._scope(rid):
            response = await self.get_response(request)
        response[self.header] = rid
        return response

    def _request_id(self, request: Any) -> str:
        given = request.META.get(self.meta_key, "")
        rid = given if isinstance(given, str) and _ACCEPTED.fullmatch(given) else new_request_id()
        request.appd_request_id = rid
        return rid

    def _scope(self, rid: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(request_id(rid))
        if self.budget is not None:
            stack.enter_context(deadline(self.budget))
        return stack
