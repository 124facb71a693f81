"""A service's request pipeline, built once per serving process.

The pipeline is one callable, request -> ``(res_args, res_kwargs)``: the ``appd_request`` hook
with every plugin's wrapper around appd's own implementation, which calls the service's own
dispatch (``service.process_request``).  It is built once and handed to the server, whichever
way the service is served (by the supervisor, or by ``service.serve()`` in a script), so plugins
see every request and nothing is patched onto the service.  When no plugin implements
``appd_request`` the pipeline *is* the service's dispatch: no hook call per request.
"""

from __future__ import annotations

from typing import Any, Protocol

from appd.errors import AppdError
from appd.hooks.manager import ESSENTIAL_PLUGINS, Hooks
from appd.transport.request import Request, RequestHandler, RequestReply

__all__ = ["Dispatching", "build_pipeline"]


class Dispatching(Protocol):
    """What a pipeline is built around: a service with its own dispatch."""

    name: str

    def process_request(self, request: Request, /) -> RequestReply:
        """Run the service's handler for ``request``."""
        ...


def build_pipeline(hooks: Hooks, service: Dispatching) -> RequestHandler:
    """The handler that serves ``service``'s requests through the plugins of ``hooks``.

    :raises AppdError: (per request) no ``appd_request`` implementation answered, which can
        only happen when appd's own implementation was unregistered.
    """
    caller = hooks.pm.hook.appd_request
    if all(impl.plugin_name in ESSENTIAL_PLUGINS for impl in caller.get_hookimpls()):
        return service.process_request

    def handle(request: Request, /) -> RequestReply:
        result: Any = caller(service=service, request=request)
        if result is None:
            raise AppdError("no appd_request implementation answered the request")
        return result  # type: ignore[no-any-return]

    return handle
